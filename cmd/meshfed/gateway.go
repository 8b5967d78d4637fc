package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/gateway/gatewayclient"
)

// gatewayFlags are the flags of meshfed gateway.
type gatewayFlags struct {
	cfg         eastwest.Config
	agent       string
	bootstrap   string
	dataDir     string
	metrics     string
	egressBind  string
	endpointMap []string
	saToken     string
	accessLog   bool
	pprof       bool
	level       logLevel
}

func newGatewayCmd() *cobra.Command {
	f := &gatewayFlags{cfg: eastwest.DefaultConfig(), level: logLevel{slog.LevelInfo}}
	cmd := &cobra.Command{
		Use:   "gateway --agent HOST:PORT --bootstrap FILE --data-dir DIR",
		Short: "Run an east-west gateway until SIGINT or SIGTERM (then drain)",
		Long: `Run an east-west gateway of this cluster: QUIC ingress from remote
gateways (mutual TLS by SPIFFE SVIDs), egress listeners for imported
services, locality failover. Its config comes from the cluster's agent
(--agent, authenticated with --bootstrap the first time); its SVID and last
config are cached in --data-dir, so it starts and serves with the agent
down. On SIGTERM it stops accepting, lets in-flight work finish for at most
--drain-timeout, and exits.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd)
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.agent, "agent", "127.0.0.1:7481", "host:port of the agent's gateway API")
	fl.StringVar(&f.bootstrap, "bootstrap", "", "the bootstrap document the agent wrote (gateway-bootstrap.json, or the mounted Secret meshfed-gateway-bootstrap)")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the cached SVID and config (static stability)")
	fl.StringVar(&f.cfg.Instance, "instance", "", "this replica's name (default: the host name)")
	fl.StringVar(&f.cfg.Ingress, "ingress", "", "UDP host:port of the QUIC ingress (default: the agent's ingress spec)")
	fl.StringVar(&f.egressBind, "egress-bind", "0.0.0.0", "IP address the egress listeners bind")
	fl.StringVar(&f.metrics, "metrics", "127.0.0.1:7490", `host:port of /metrics, /healthz and /readyz ("" turns it off)`)
	fl.StringArrayVar(&f.endpointMap, "endpoint-map", nil, "PREFIX=IP: dial local endpoints inside PREFIX at IP, same port (simulated pod networks; repeatable)")
	fl.StringVar(&f.saToken, "service-account-token", "", "file of a Kubernetes ServiceAccount token to authenticate to the agent with, instead of the bootstrap token")
	fl.BoolVar(&f.pprof, "pprof", false, "serve net/http/pprof on the --metrics address (off by default)")
	fl.BoolVar(&f.accessLog, "access-log", false, "log a line per egress connection or request and per ingress stream")
	fl.DurationVar(&f.cfg.ConnectTimeout, "connect-timeout", f.cfg.ConnectTimeout, "bound of one connection attempt")
	fl.DurationVar(&f.cfg.IdleTimeout, "idle-timeout", f.cfg.IdleTimeout, "close a piped connection idle this long")
	fl.DurationVar(&f.cfg.ProbeInterval, "probe-interval", f.cfg.ProbeInterval, "probe each remote gateway this often")
	fl.DurationVar(&f.cfg.ProbeTimeout, "probe-timeout", f.cfg.ProbeTimeout, "a probe answered later fails")
	fl.IntVar(&f.cfg.ProbeFailures, "probe-failures", f.cfg.ProbeFailures, "failed probes in a row that take a remote gateway out of selection")
	fl.IntVar(&f.cfg.MaxStreamsPerConn, "max-streams-per-conn", f.cfg.MaxStreamsPerConn, "concurrent streams a remote gateway may open per connection")
	fl.IntVar(&f.cfg.MaxStreamsPerCluster, "max-streams-per-cluster", f.cfg.MaxStreamsPerCluster, "concurrent streams from one source cluster")
	fl.DurationVar(&f.cfg.DrainDelay, "drain-delay", f.cfg.DrainDelay, "after SIGTERM, keep serving this long while /readyz says not ready (so endpoints drop the gateway first)")
	fl.DurationVar(&f.cfg.DrainTimeout, "drain-timeout", f.cfg.DrainTimeout, "how long SIGTERM waits for in-flight work")
	fl.Var(&f.level, "log-level", "log level: debug, info, warn or error")
	return cmd
}

func hostnameOr(def string) string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return def
}

// build turns the flags into the gateway's and the client's configs.
func (f *gatewayFlags) build(cmd *cobra.Command) (eastwest.Config, gatewayclient.Config, error) {
	var errs []error
	cfg := f.cfg
	if cfg.Instance == "" {
		cfg.Instance = hostnameOr("gateway")
	}
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: f.level.Level}))
	cfg.Log = log.With("instance", cfg.Instance)
	if f.accessLog {
		cfg.AccessLog = log.With("log", "access")
	}
	a, err := netip.ParseAddr(f.egressBind)
	if err != nil {
		errs = append(errs, &federation.FieldError{Field: "egress-bind", Value: f.egressBind, Reason: "must be an IP address"})
	}
	cfg.EgressBind = a
	for _, m := range f.endpointMap {
		p, ip, ok := strings.Cut(m, "=")
		pfx, err1 := netip.ParsePrefix(p)
		addr, err2 := netip.ParseAddr(ip)
		if !ok || err1 != nil || err2 != nil {
			errs = append(errs, &federation.FieldError{Field: "endpoint-map", Value: m, Reason: "must be PREFIX=IP, e.g. 10.244.0.0/16=127.0.0.1"})
			continue
		}
		if cfg.EndpointMap == nil {
			cfg.EndpointMap = map[netip.Prefix]netip.Addr{}
		}
		cfg.EndpointMap[pfx] = addr
	}
	if f.bootstrap == "" {
		errs = append(errs, &federation.FieldError{Field: "bootstrap", Reason: "required: the file the agent wrote"})
	}
	if f.metrics != "" {
		if _, _, err := net.SplitHostPort(f.metrics); err != nil {
			errs = append(errs, &federation.FieldError{Field: "metrics", Value: f.metrics, Reason: "must be host:port"})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, gatewayclient.Config{}, &codedError{code: exitUsage, err: err, lines: unjoin(err)}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, gatewayclient.Config{}, &codedError{code: exitUsage, err: err, lines: unjoin(err)}
	}
	boot, err := os.ReadFile(f.bootstrap)
	if err != nil {
		return cfg, gatewayclient.Config{}, &codedError{code: exitUsage, err: fmt.Errorf("bootstrap: %w", err)}
	}
	cc := gatewayclient.Config{Agent: f.agent, Bootstrap: boot, Instance: cfg.Instance, CacheDir: f.dataDir, Log: log.With("component", "gatewayclient")}
	if f.saToken != "" {
		path := f.saToken
		cc.ServiceAccountToken = func() (string, error) {
			b, err := os.ReadFile(path) // re-read: the kubelet rotates it
			return strings.TrimSpace(string(b)), err
		}
	}
	return cfg, cc, nil
}

func (f *gatewayFlags) run(cmd *cobra.Command) error {
	cfg, cc, err := f.build(cmd)
	if err != nil {
		return err
	}
	client, err := gatewayclient.New(cc)
	if err != nil {
		return &codedError{code: exitUsage, err: err}
	}
	gw, err := eastwest.New(cfg, eastwest.Deps{Source: client, SVIDs: client, Bundles: client.Bundles(), Reporter: client})
	if err != nil {
		return &codedError{code: exitUsage, err: err}
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The client outlives the drain, so reports and renewals go on.
	cctx, cancelClient := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelClient()
	clientErr := make(chan error, 1)
	go func() { clientErr <- client.Run(cctx) }()
	if f.metrics != "" {
		ln, err := net.Listen("tcp", f.metrics)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		h := gw.Handler()
		if f.pprof {
			mux := http.NewServeMux()
			mux.Handle("/", h)
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
			h = mux
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer func() { _ = srv.Close() }()
	}
	gwErr := make(chan error, 1)
	go func() { gwErr <- gw.Run(ctx) }()
	select {
	case err := <-clientErr:
		// Only a refused bootstrap ends the client early.
		stop()
		if gerr := <-gwErr; gerr != nil {
			return errors.Join(err, gerr)
		}
		return err
	case err := <-gwErr:
		cancelClient()
		if cerr := <-clientErr; cerr != nil {
			return errors.Join(err, cerr)
		}
		return err
	}
}
