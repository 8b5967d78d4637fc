package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/clientconfig"
	"github.com/meshfed/meshfed/internal/hubdial"
)

// testHub is a multi-server hub on loopback with real Raft on disk and real
// gRPC over TLS, whose servers can be killed and restarted.
type testHub struct {
	t       testing.TB
	encrypt string
	root    string
	mu      sync.Mutex
	cfgs    []Config
	servers []*Server // nil while stopped
	logs    *logRecorder
}

// logRecorder remembers which server logged which message.
type logRecorder struct {
	mu   sync.Mutex
	msgs map[string][]string // message -> servers, in order
}

func (r *logRecorder) add(server, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs[msg] = append(r.msgs[msg], server)
}

// Logged returns the servers that logged msg, once per time.
func (h *testHub) Logged(msg string) []string {
	h.logs.mu.Lock()
	defer h.logs.mu.Unlock()
	return append([]string(nil), h.logs.msgs[msg]...)
}

// recordingHandler passes records on and notes their messages.
type recordingHandler struct {
	slog.Handler
	rec    *logRecorder
	server string
}

func (h recordingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.rec.add(h.server, r.Message)
	return h.Handler.Handle(ctx, r)
}

func (h recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return recordingHandler{h.Handler.WithAttrs(as), h.rec, h.server}
}

func (h recordingHandler) WithGroup(name string) slog.Handler {
	return recordingHandler{h.Handler.WithGroup(name), h.rec, h.server}
}

// freePorts reserves n distinct TCP ports that are also free for UDP.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for len(ports) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			_ = ln.Close()
			continue
		}
		_ = u.Close()
		lns = append(lns, ln)
		ports = append(ports, p)
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return ports
}

// slogWriter logs through t until the test's cleanups are done: library
// goroutines (memberlist's probes) may log after a server's Shutdown
// returns, and t.Log after the test completed panics.
type slogWriter struct {
	t    testing.TB
	mu   *sync.RWMutex
	done *bool
}

func (w slogWriter) Write(p []byte) (int, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if !*w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	w := slogWriter{t: t, mu: &sync.RWMutex{}, done: new(bool)}
	t.Cleanup(func() {
		w.mu.Lock()
		*w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// newTestHub starts n servers with bootstrap-expect n and waits for a leader.
func newTestHub(t testing.TB, n int, tweak ...func(*Config)) *testHub {
	t.Helper()
	h := buildTestHub(t, n, func(_ int, c *Config) {
		for _, f := range tweak {
			f(c)
		}
	})
	for i := range h.cfgs {
		h.Start(i)
	}
	h.WaitReady(30 * time.Second)
	return h
}

// buildTestHub configures n servers (bootstrap-expect n, each joining s0)
// without starting them; tweak may change each server's config.
func buildTestHub(t testing.TB, n int, tweak func(i int, c *Config)) *testHub {
	t.Helper()
	key, err := GenerateEncryptKey()
	if err != nil {
		t.Fatal(err)
	}
	h := &testHub{t: t, encrypt: key, root: t.TempDir(), logs: &logRecorder{msgs: map[string][]string{}}}
	ports := freePorts(t, 4*n)
	for i := 0; i < n; i++ {
		h.cfgs = append(h.cfgs, h.newConfig(i, n, ports[4*i:4*i+4]))
		if i > 0 {
			h.cfgs[i].Join = []string{fmt.Sprintf("127.0.0.1:%d", h.cfgs[0].GossipPort)}
		}
		tweak(i, &h.cfgs[i])
	}
	h.servers = make([]*Server, n)
	t.Cleanup(h.stopAll)
	return h
}

// newConfig is server i's configuration on the given four ports.
func (h *testHub) newConfig(i, expect int, ports []int) Config {
	c := DefaultConfig()
	c.Name = fmt.Sprintf("s%d", i)
	c.DataDir = filepath.Join(h.root, c.Name)
	c.GRPCPort, c.RaftPort, c.GossipPort, c.HTTPPort = ports[0], ports[1], ports[2], ports[3]
	c.BootstrapExpect = expect
	c.EncryptKey = h.encrypt
	c.GossipProfile = "local"
	c.HeartbeatTimeout = 300 * time.Millisecond
	c.ElectionTimeout = 300 * time.Millisecond
	c.LeaderLeaseTimeout = 150 * time.Millisecond
	c.DeadServerGrace = time.Hour
	return c
}

func (h *testHub) stopAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, s := range h.servers {
		if s != nil {
			s.Kill()
			h.servers[i] = nil
		}
	}
}

// AddWith starts a new server that joins the running ones, with s0's
// config on fresh ports changed by tweak.
func (h *testHub) AddWith(name string, tweak func(*Config)) int {
	h.t.Helper()
	ports := freePorts(h.t, 4)
	c := h.cfgs[0]
	c.Name = name
	c.DataDir = filepath.Join(h.root, name)
	c.GRPCPort, c.RaftPort, c.GossipPort, c.HTTPPort = ports[0], ports[1], ports[2], ports[3]
	c.Join = nil
	for _, o := range h.cfgs {
		c.Join = append(c.Join, fmt.Sprintf("127.0.0.1:%d", o.GossipPort))
	}
	tweak(&c)
	h.mu.Lock()
	h.cfgs = append(h.cfgs, c)
	h.servers = append(h.servers, nil)
	i := len(h.cfgs) - 1
	h.mu.Unlock()
	h.Start(i)
	return i
}

// Start starts (or restarts) server i with its original config and data dir.
func (h *testHub) Start(i int) *Server {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.servers[i] != nil {
		h.t.Fatalf("server %d already running", i)
	}
	c := h.cfgs[i]
	if len(c.Join) == 0 {
		// Join whichever other server exists; restarts need a way back in.
		for j, o := range h.cfgs {
			if j != i {
				c.Join = append(c.Join, fmt.Sprintf("127.0.0.1:%d", o.GossipPort))
			}
		}
	}
	var s *Server
	var err error
	// A just-killed server's ports can take a moment to be free again.
	waitFor(h.t, 10*time.Second, "server start", func() error {
		log := testLogger(h.t)
		log = slog.New(recordingHandler{log.Handler(), h.logs, c.Name})
		s, err = New(c, log)
		return err
	})
	if err := s.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.servers[i] = s
	return s
}

// Kill stops server i as a crash would.
func (h *testHub) Kill(i int) {
	h.mu.Lock()
	s := h.servers[i]
	h.servers[i] = nil
	h.mu.Unlock()
	if s != nil {
		s.Kill()
	}
}

func (h *testHub) Server(i int) *Server {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.servers[i]
}

// Leader waits for a ready leader among the running servers and returns its index.
func (h *testHub) Leader(timeout time.Duration) int {
	h.t.Helper()
	idx := -1
	waitFor(h.t, timeout, "a ready leader", func() error {
		for i := range h.cfgs {
			if s := h.Server(i); s != nil && s.leaderReady() {
				idx = i
				return nil
			}
		}
		return errors.New("no ready leader")
	})
	return idx
}

// WaitReady waits until every running server answers Ready.
func (h *testHub) WaitReady(timeout time.Duration) {
	h.t.Helper()
	waitFor(h.t, timeout, "all servers ready", func() error {
		for i := range h.cfgs {
			s := h.Server(i)
			if s == nil {
				continue
			}
			if err := s.Ready(context.Background()); err != nil {
				return fmt.Errorf("%s: %w", s.Name(), err)
			}
		}
		return nil
	})
}

// AdminConn dials the given servers (all running ones when none are named)
// with the admin.yaml of the first running server.
func (h *testHub) AdminConn(only ...int) *grpc.ClientConn {
	h.t.Helper()
	var cfg *clientconfig.Config
	var addrs []string
	for i := range h.cfgs {
		s := h.Server(i)
		if s == nil {
			continue
		}
		if cfg == nil {
			var err error
			waitFor(h.t, 10*time.Second, "admin.yaml", func() error {
				cfg, err = clientconfig.Load(s.AdminConfigPath())
				return err
			})
		}
		if len(only) == 0 || contains(only, i) {
			addrs = append(addrs, s.GRPCAddr())
		}
	}
	cfg.Hubs = addrs
	tlsCfg, err := cfg.TLS()
	if err != nil {
		h.t.Fatal(err)
	}
	conn, err := hubdial.Dial(cfg.Hubs, tlsCfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func (h *testHub) Admin(only ...int) fedv1.AdminClient {
	return fedv1.NewAdminClient(h.AdminConn(only...))
}

func contains(xs []int, x int) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		<-time.After(20 * time.Millisecond)
	}
}
