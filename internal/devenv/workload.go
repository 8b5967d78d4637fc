package devenv

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/meshfed/meshfed/federation"
)

// WorkloadConfig configures RunWorkload.
type WorkloadConfig struct {
	Kind WorkloadKind
	// Listen is the host:port to serve on.
	Listen   string
	Service  federation.ServiceKey
	Cluster  federation.ClusterName
	Zone     string
	Instance string
	Log      *slog.Logger
}

// Validate reports every invalid field.
func (c WorkloadConfig) Validate() error {
	var errs []error
	add := func(field, value, reason string) {
		errs = append(errs, &federation.FieldError{Field: field, Value: value, Reason: reason})
	}
	if _, err := ParseWorkloadKind(string(c.Kind)); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		add("listen", c.Listen, "must be host:port")
	}
	if c.Service.IsZero() {
		add("service", "", "required: namespace/name")
	}
	if c.Cluster.IsZero() {
		add("cluster", "", "required")
	}
	if c.Instance == "" {
		add("instance", "", "required")
	}
	return errors.Join(errs...)
}

// Reply is what an HTTP workload answers every request with, as JSON.
type Reply struct {
	Service  string `json:"service"`
	Cluster  string `json:"cluster"`
	Zone     string `json:"zone"`
	Instance string `json:"instance"`
	Method   string `json:"method"`
	Path     string `json:"path"`
	Host     string `json:"host"`
}

// RunWorkload serves a sample workload on cfg.Listen until ctx is done.
func RunWorkload(ctx context.Context, cfg WorkloadConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	return ServeWorkload(ctx, ln, cfg)
}

// ServeWorkload serves a sample workload on ln (cfg.Listen is not used)
// until ctx is done, and closes ln.
func ServeWorkload(ctx context.Context, ln net.Listener, cfg WorkloadConfig) error {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log.Info("serving", "kind", cfg.Kind, "listen", ln.Addr(), "service", cfg.Service, "cluster", cfg.Cluster, "instance", cfg.Instance)
	if cfg.Kind == KindHTTP {
		return serveHTTP(ctx, ln, cfg)
	}
	return serveEcho(ctx, ln, log)
}

func serveHTTP(ctx context.Context, ln net.Listener, cfg WorkloadConfig) error {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Reply{Service: cfg.Service.String(), Cluster: cfg.Cluster.String(), Zone: cfg.Zone,
			Instance: cfg.Instance, Method: r.Method, Path: r.URL.Path, Host: r.Host})
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		<-stopped
		return nil
	}
	return err
}

// serveEcho echoes every connection's bytes back, half-closing when the
// client does.
func serveEcho(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	go func() {
		<-ctx.Done()
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	}()
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		mu.Lock()
		conns[c] = struct{}{}
		if ctx.Err() != nil { // the closer may have run already
			_ = c.Close()
		}
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				_ = c.Close()
			}()
			if _, err := io.Copy(c, c); err != nil && ctx.Err() == nil {
				log.Debug("echo", "peer", c.RemoteAddr(), "err", err)
			}
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
		})
	}
}
