package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/agent"
	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	hubsrv "github.com/meshfed/meshfed/hub"
	"github.com/meshfed/meshfed/internal/clientconfig"
	"github.com/meshfed/meshfed/internal/hubdial"
	"github.com/meshfed/meshfed/internal/hubtls"
)

// These tests run the hub servers and the agents in this process, with
// real Raft on disk, real gRPC over TLS and real agents on loopback, because
// they need lifetimes that `meshfed hub` does not take as a flag yet.

type tWriter struct {
	t      testing.TB
	prefix string
}

func (w tWriter) Write(b []byte) (int, error) {
	defer func() { _ = recover() }() // a log line after the test ended
	w.t.Log(w.prefix + strings.TrimSpace(string(b)))
	return len(b), nil
}

func testLog(t testing.TB, name string, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t, name + ": "}, &slog.HandlerOptions{Level: level}))
}

// startHubServers starts n hub servers in this process and waits until
// all are ready.
func startHubServers(t *testing.T, n int, tweak func(*hubsrv.Config)) []*hubsrv.Server {
	t.Helper()
	key, err := hubsrv.GenerateEncryptKey()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	var servers []*hubsrv.Server
	var gossip0 int
	for i := range n {
		c := hubsrv.DefaultConfig()
		c.Name = fmt.Sprintf("s%d", i)
		c.DataDir = filepath.Join(root, c.Name)
		c.GRPCPort, c.RaftPort, c.GossipPort, c.HTTPPort = freePort(t), freePort(t), freePort(t), freePort(t)
		if i == 0 {
			gossip0 = c.GossipPort
		} else {
			c.Join = []string{fmt.Sprintf("127.0.0.1:%d", gossip0)}
		}
		c.BootstrapExpect = n
		c.EncryptKey = key
		c.GossipProfile = "local"
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 300*time.Millisecond, 300*time.Millisecond, 150*time.Millisecond
		tweak(&c)
		s, err := hubsrv.New(c, testLog(t, c.Name, slog.LevelInfo))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Shutdown() })
		servers = append(servers, s)
	}
	waitFor(t, 60*time.Second, "hub servers ready", func() error {
		for _, s := range servers {
			if err := s.Ready(context.Background()); err != nil {
				return fmt.Errorf("%s: %w", s.Name(), err)
			}
		}
		return nil
	})
	return servers
}

func adminOf(t *testing.T, s *hubsrv.Server) fedv1.AdminClient {
	t.Helper()
	var cfg *clientconfig.Config
	waitFor(t, 10*time.Second, "admin.yaml", func() error {
		var err error
		cfg, err = clientconfig.Load(s.AdminConfigPath())
		return err
	})
	tlsCfg, err := cfg.TLS()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := hubdial.Dial(cfg.Hubs, tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return fedv1.NewAdminClient(conn)
}

// inProcessAgent is an agent run in this process until stopped.
type inProcessAgent struct {
	a      *agent.Agent
	cancel context.CancelFunc
	done   chan error
}

func (r *inProcessAgent) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	if err := <-r.done; err != nil {
		t.Errorf("agent Run: %v", err)
	}
	r.cancel = nil
}

func runAgent(t *testing.T, cfg agent.Config) *inProcessAgent {
	t.Helper()
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &inProcessAgent{a: a, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func agentConfig(t *testing.T, cluster string, hubs []string) agent.Config {
	t.Helper()
	dir := t.TempDir()
	cfg := agent.DefaultConfig()
	cfg.Cluster = federation.MustClusterName(cluster)
	loc, err := federation.NewLocality("r-"+cluster, "z-"+cluster, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Locality = loc
	cfg.DataDir = dir
	cfg.Source = agent.SourceFile
	cfg.SourcePath = filepath.Join(dir, "catalog.yaml")
	cfg.FilePollInterval = 20 * time.Millisecond
	cfg.HTTPAddr = ""
	cfg.GatewayAPIAddr = ""
	cfg.ReconnectMin = 20 * time.Millisecond
	cfg.ReconnectMax = time.Second
	cfg.HubAddresses = hubs
	cfg.Log = testLog(t, cluster, slog.LevelInfo)
	return cfg
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

func exportCatalog(name string) string {
	return fmt.Sprintf(`services:
- namespace: default
  name: %s
  export: true
  ports: [{name: http, port: 8080, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1:9001, zone: z-east, ready: true}
`, name)
}

func importsFrom(st agent.State, key, cluster string) bool {
	for _, p := range st.Imports {
		if p.Key != key {
			continue
		}
		for _, c := range p.Clusters {
			if c.Cluster == cluster {
				return true
			}
		}
	}
	return false
}

func loadCredentials(t *testing.T, dataDir string) *agent.Credentials {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "credentials.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c agent.Credentials
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

func serialOf(t *testing.T, c *agent.Credentials) string {
	t.Helper()
	pair, err := tls.X509KeyPair([]byte(c.Cert), []byte(c.Key))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber.Text(16)
}

// syncWith opens a Sync stream to addr with c's certificate and returns the
// error of its hello.
func syncWith(t *testing.T, c *agent.Credentials, addr string) error {
	t.Helper()
	pair, err := tls.X509KeyPair([]byte(c.Cert), []byte(c.Key))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(c.HubCA))
	conn, err := hubdial.Dial([]string{addr}, hubtls.ClientConfig(pool, &pair, c.HubTrustDomain))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := fedv1.NewSyncClient(conn).Sync(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Hello{Hello: &fedv1.SyncHello{
		Cluster: c.Cluster, Capabilities: &fedv1.Capabilities{Version: federation.CapabilityVersion},
	}}}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	// io.EOF from Send: the server ended the stream; Recv has its status.
	_, err = st.Recv()
	return err
}

// TestAgentsKeepSyncingThroughTenCertificateLifetimes runs two agents
// against a three-server hub whose agent certificates live 30 s (the
// shortest the hub takes). For ten lifetimes, east exports a new service
// every few seconds and west must import each; east is restarted from its
// data directory after a renewal, and every replaced certificate is
// refused by every server.
func TestAgentsKeepSyncingThroughTenCertificateLifetimes(t *testing.T) {
	const ttl = hubsrv.MinAgentCertTTL
	servers := startHubServers(t, 3, func(c *hubsrv.Config) { c.AgentCertTTL = ttl })
	var addrs []string
	for _, s := range servers {
		addrs = append(addrs, s.GRPCAddr())
	}
	admin := adminOf(t, servers[0])
	ctx := context.Background()
	cfgs := map[string]agent.Config{}
	agents := map[string]*inProcessAgent{}
	for _, name := range []string{"east", "west"} {
		cfg := agentConfig(t, name, addrs)
		writeFile(t, cfg.SourcePath, "services: []\n")
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		tok, err := admin.CreateToken(tctx, &fedv1.CreateTokenRequest{Cluster: name})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if err := agent.Join(ctx, cfg, tok.GetToken()); err != nil {
			t.Fatalf("join %s: %v", name, err)
		}
		cfgs[name] = cfg
		agents[name] = runAgent(t, cfg)
	}
	eastDir := cfgs["east"].DataDir
	seen := map[string]*agent.Credentials{} // the certificates east held, by serial
	record := func() string {
		c := loadCredentials(t, eastDir)
		s := serialOf(t, c)
		seen[s] = c
		return s
	}
	prev := record()

	start := time.Now()
	restarted := false
	refused := 0
	for i := 0; time.Since(start) < 10*ttl; i++ {
		name := fmt.Sprintf("svc-%d", i)
		writeFile(t, cfgs["east"].SourcePath, exportCatalog(name))
		waitFor(t, 20*time.Second, "west imports default/"+name, func() error {
			if !importsFrom(agents["west"].a.State(), "default/"+name, "east") {
				return fmt.Errorf("west does not import default/%s from east (east: %+v)", name, agents["east"].a.State().Hub)
			}
			return nil
		})
		if cur := record(); cur != prev {
			// The replaced certificate is still valid (it was renewed at
			// half-life): only the hub's record of the newest serial
			// refuses it, on whichever server.
			old := seen[prev]
			srv := servers[refused%len(servers)]
			if err := syncWith(t, old, srv.GRPCAddr()); status.Code(err) != codes.PermissionDenied {
				t.Fatalf("%s: Sync with the replaced certificate %s: %v, want PermissionDenied", srv.Name(), prev, err)
			}
			refused++
			prev = cur
			if !restarted && time.Since(start) > 5*ttl {
				// Restart east from its data directory, after a renewal.
				agents["east"].stop(t)
				agents["east"] = runAgent(t, cfgs["east"])
				restarted = true
			}
		}
		<-time.After(time.Second) // pace the catalog changes
	}
	if !restarted {
		t.Fatal("east was never restarted after a renewal")
	}
	// 10 lifetimes of 33 s (30 s and 3 s of clock skew), renewed at
	// half-life: ~22 renewals; the files seen are a sample of them.
	if refused < 10 {
		t.Fatalf("east's stored certificate changed %d times in 10 lifetimes, want at least 10", refused)
	}
	t.Logf("%d renewals of east seen, each replaced certificate refused", refused)
	for name, r := range agents {
		if st := r.a.State(); !st.Hub.Connected {
			t.Errorf("%s is not connected at the end: %s", name, st.Hub.LastError)
		}
	}
}
