package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/policy"
	"github.com/meshfed/meshfed/federation/policy/policyfile"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub"
	"github.com/meshfed/meshfed/internal/analyze"
	"github.com/meshfed/meshfed/internal/hubdial"
	"github.com/meshfed/meshfed/internal/hubtls"
	"github.com/meshfed/meshfed/internal/pki"
	"github.com/meshfed/meshfed/internal/wait"
	"github.com/meshfed/meshfed/trust/x509pem"
)

// analyzeHub is a real single-server hub with two joined clusters that
// export reviews, for meshfed analyze to read.
type analyzeHub struct {
	config string // admin.yaml
	admin  fedv1.AdminClient
}

// startAnalyzeHub starts a one-server hub (real Raft on disk, real gRPC
// and TLS), joins east (us-east) and west (us-west) through join tokens,
// and has each publish reviews.default over its Sync stream: port 9080
// HTTP, endpoints of versions v1 and v2, all ready.
func startAnalyzeHub(t *testing.T) *analyzeHub {
	t.Helper()
	key, err := hub.GenerateEncryptKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := hub.DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.BootstrapExpect, cfg.EncryptKey = "s0", t.TempDir(), 1, key
	cfg.GossipProfile = "local"
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 300*time.Millisecond, 300*time.Millisecond, 150*time.Millisecond
	ports := freePorts(t, 4)
	cfg.GRPCPort, cfg.RaftPort, cfg.GossipPort, cfg.HTTPPort = ports[0], ports[1], ports[2], ports[3]
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := hub.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	backoff := wait.Backoff{Min: 10 * time.Millisecond, Max: 200 * time.Millisecond}
	if err := wait.Poll(ctx, backoff, "hub ready", func(ctx context.Context) error {
		if err := s.Ready(ctx); err != nil {
			return err
		}
		_, err := os.Stat(s.AdminConfigPath())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	admin, closeAdmin, err := dialAdmin(ctx, s.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = closeAdmin() })
	h := &analyzeHub{config: s.AdminConfigPath(), admin: admin}
	for _, c := range []struct{ name, region string }{{"east", "us-east"}, {"west", "us-west"}} {
		h.joinAndPublish(ctx, t, c.name, c.region)
	}
	return h
}

func (h *analyzeHub) joinAndPublish(ctx context.Context, t *testing.T, cluster, region string) {
	t.Helper()
	tok, err := h.admin.CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	jt, err := federation.ParseJoinToken(tok.GetToken())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := hubdial.Dial(jt.Addrs, hubtls.PinnedConfig(jt.CAFingerprint))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	td := cluster + ".meshfed.local"
	ca, err := pki.NewCA(td, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := fedv1.NewJoinClient(conn).Join(ctx, &fedv1.JoinRequest{
		Token: tok.GetToken(), Cluster: cluster,
		Locality:     &fedv1.Locality{Region: region, Zone: region + "-1"},
		TrustBundle:  &fedv1.TrustBundle{TrustDomain: td, X509Authorities: [][]byte{ca.Cert.Raw}, RefreshHintSeconds: 60, SequenceNumber: 1},
		Csr:          csr,
		Capabilities: &fedv1.Capabilities{Version: federation.CapabilityVersion},
	})
	if err != nil {
		t.Fatalf("join %s: %v", cluster, err)
	}
	certs, err := x509pem.DecodeCerts(resp.GetClientCertificate())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(resp.GetHubCa())
	agentConn, err := hubdial.Dial(jt.Addrs, hubtls.ClientConfig(pool, &tls.Certificate{Certificate: [][]byte{certs[0].Raw}, PrivateKey: key, Leaf: certs[0]}, resp.GetSettings().GetHubTrustDomain()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = agentConn.Close() }()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := fedv1.NewSyncClient(agentConn).Sync(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Hello{Hello: &fedv1.SyncHello{
		Cluster: cluster, Capabilities: &fedv1.Capabilities{Version: federation.CapabilityVersion}}}}); err != nil {
		t.Fatal(err)
	}
	svc := &fedv1.ExportedService{Namespace: "default", Name: "reviews",
		Ports: []*fedv1.ServicePort{{Name: "http", Port: 9080, Protocol: "HTTP"}},
		Endpoints: []*fedv1.EndpointGroup{
			{Zone: region + "-1", Labels: map[string]string{"version": "v1"}, Ready: 2, Serving: 2},
			{Zone: region + "-1", Labels: map[string]string{"version": "v2"}, Ready: 1, Serving: 1},
		}}
	if err := st.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Publish{Publish: &fedv1.PublishExports{Nonce: 1, Upserts: []*fedv1.ExportedService{svc}}}}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := st.Recv()
		if err != nil {
			t.Fatalf("%s sync: %v", cluster, err)
		}
		if r := m.GetPublishResult(); r != nil && r.GetNonce() == 1 {
			if r.GetError() != "" {
				t.Fatalf("%s publish: %s %s", cluster, r.GetErrorCode(), r.GetError())
			}
			return
		}
	}
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var open []net.Listener
	defer func() {
		for _, l := range open {
			_ = l.Close()
		}
	}()
	for len(ports) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, ln)
		p := ln.Addr().(*net.TCPAddr).Port
		if u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			_ = u.Close()
			ports = append(ports, p)
		}
	}
	return ports
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

const reviewsPolicy = `apiVersion: meshfed.io/v1alpha1
kind: GlobalTrafficPolicy
metadata:
  name: reviews
spec:
  host: reviews.default
  http:
  - route:
    - destination: {cluster: %s}
      weight: 90
    - destination: {cluster: west}
      weight: 10
`

func writeTemp(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// meshfed analyze against a real hub: clean with the stored 90/10 policy;
// a file replacing it with a destination that is not a member is an Error
// (exit 1) in text and JSON; a warning alone exits 0; without the hub the
// catalog checks do not run.
func TestAnalyzeAgainstARealHub(t *testing.T) {
	h := startAnalyzeHub(t)
	stored, err := policyfile.Decode(fmt.Appendf(nil, reviewsPolicy, "east"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := policy.ToProto(stored[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.admin.PutPolicy(t.Context(), &fedv1.PutPolicyRequest{Policy: m}); err != nil {
		t.Fatal(err)
	}
	d := newTestDeps(t, nil)
	d.dialAdmin = dialAdmin // the real one

	r := run(t, d, "analyze", "--config", h.config)
	if r.code != 0 || r.stdout != "" || r.stderr != "no problems found (1 policy against 2 clusters and 1 service)\n" {
		t.Fatalf("clean hub: exit %d, stdout %q, stderr %q; want 0, nothing, the summary", r.code, r.stdout, r.stderr)
	}

	bad := writeTemp(t, "bad.yaml", fmt.Sprintf(reviewsPolicy, "north"))
	r = run(t, d, "analyze", "--config", h.config, "-f", bad)
	want := `Error [MF0003] GlobalTrafficPolicy/reviews spec.http[0].route[0].destination.cluster: cluster "north" is not a member (members: east, west) (` + bad + ")\n"
	if r.code != exitError || r.stdout != want || r.stderr != "error: analyze: 1 error\n" {
		t.Fatalf("file with an unknown cluster: exit %d, stdout %q, stderr %q; want %d, %q and one error", r.code, r.stdout, r.stderr, exitError, want)
	}

	r = run(t, d, "analyze", "--config", h.config, "-f", bad, "-o", "json")
	var msgs []analyze.Message
	if err := json.Unmarshal([]byte(r.stdout), &msgs); err != nil {
		t.Fatalf("-o json: %v\n%s", err, r.stdout)
	}
	if r.code != exitError || len(msgs) != 1 || msgs[0].Code != analyze.UnknownCluster || msgs[0].Severity != analyze.Error ||
		msgs[0].Path != "spec.http[0].route[0].destination.cluster" || msgs[0].Origin != bad {
		t.Fatalf("-o json: exit %d, messages %+v", r.code, msgs)
	}

	warn := writeTemp(t, "warn.yaml", fmt.Sprintf(reviewsPolicy, "east")+"  localityLbSetting:\n    excludeClusters: [nort]\n")
	r = run(t, d, "analyze", "--config", h.config, "-f", warn)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "Warning [MF0015] GlobalTrafficPolicy/reviews spec.localityLbSetting.excludeClusters[0]: ") || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("warning only: exit %d, stdout %q; want 0 and one MF0015 warning", r.code, r.stdout)
	}

	r = run(t, d, "analyze", "--hub=false", "-f", bad, "-o", "json")
	if r.code != 0 || r.stdout != "[]\n" {
		t.Fatalf("--hub=false: exit %d, stdout %q; want 0 and [] (membership needs the hub)", r.code, r.stdout)
	}
}

func TestAnalyzeUsageAndFileErrors(t *testing.T) {
	d := newTestDeps(t, nil) // fails the test if it dials
	if r := run(t, d, "analyze", "--hub=false"); r.code != exitUsage || !strings.Contains(r.stderr, "--hub=false needs at least one -f FILE") {
		t.Errorf("--hub=false without -f: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := run(t, d, "analyze", "--hub=false", "-f", "x.yaml", "-o", "yaml"); r.code != exitUsage || !strings.Contains(r.stderr, "text, json") {
		t.Errorf("-o yaml: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := run(t, d, "analyze", "--hub=false", "-f", filepath.Join(t.TempDir(), "missing.yaml")); r.code != exitError || !strings.Contains(r.stderr, "missing.yaml") {
		t.Errorf("missing file: exit %d, stderr %q", r.code, r.stderr)
	}
	// A file that does not decode is coded messages, not a failure to run.
	bad := writeTemp(t, "bad.yaml", "apiVersion: meshfed.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata: {name: reviews}\nspec:\n  host: reviews.default\n  htpp: []\n")
	r := run(t, d, "analyze", "--hub=false", "-f", bad)
	if want := "Error [MF0001] GlobalTrafficPolicy/reviews spec.htpp: unknown field (" + bad + ":1)\n"; r.code != exitError || r.stdout != want {
		t.Errorf("undecodable file: exit %d, stdout %q; want %d, %q", r.code, r.stdout, exitError, want)
	}
}
