package devenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/meshfed/meshfed/agent"
	"github.com/meshfed/meshfed/federation"
)

func TestRestartBackoffDoublesWhileTheChildKeepsDyingAndResetsAfterAStableRun(t *testing.T) {
	p := RestartPolicy{Min: 2 * time.Second, Max: 30 * time.Second, Stable: 10 * time.Second}
	var got []time.Duration
	var d time.Duration
	for range 6 {
		d = p.Next(d, time.Second)
		got = append(got, d)
	}
	want := []time.Duration{2, 4, 8, 16, 30, 30}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("delays %v, want %v seconds", got, want)
		}
	}
	if d := p.Next(30*time.Second, 10*time.Second); d != p.Min {
		t.Errorf("after a run of Stable: %v, want %v", d, p.Min)
	}
}

func TestPortPlanHasNoOverlapAndFitsItsSpan(t *testing.T) {
	const base = 7400
	p := Ports{Base: base}
	seen := map[int]string{}
	add := func(port int, what string) {
		if port < base || port >= base+PortSpan {
			t.Errorf("%s: port %d outside %d..%d", what, port, base, base+PortSpan-1)
		}
		if prev, ok := seen[port]; ok {
			t.Errorf("port %d used by %s and %s", port, prev, what)
		}
		seen[port] = what
	}
	for i := range Servers {
		s := p.Server(i)
		n := "s" + strconv.Itoa(i)
		add(s.GRPC, n+" grpc")
		add(s.Raft, n+" raft")
		add(s.Gossip, n+" gossip")
		add(s.HTTP, n+" http")
	}
	add(p.Control(), "control API")
	for j, c := range topology {
		ws := c.workloads()
		if len(ws) > maxWorkloads {
			t.Fatalf("%s has %d workloads, the plan has room for %d", c.name, len(ws), maxWorkloads)
		}
		cp := p.Cluster(j, len(ws))
		n := c.name.String()
		add(cp.AgentHTTP, n+" agent")
		add(cp.GatewayAPI, n+" gateway api")
		add(cp.Ingress, n+" ingress")
		add(cp.Metrics, n+" metrics")
		add(cp.DNS, n+" dns")
		for k, w := range cp.Workloads {
			add(w, n+" workload "+strconv.Itoa(k))
		}
		for q := cp.EgressMin; q <= cp.EgressMax; q++ {
			add(q, n+" egress")
		}
	}
	// The layout the README documents.
	if s := p.Server(0); s.GRPC != 7400 || s.HTTP != 7403 {
		t.Errorf("s0: %+v", s)
	}
	if c := p.Cluster(1, 2); c.AgentHTTP != 7460 || c.EgressMin != 7520 || c.EgressMax != 7539 {
		t.Errorf("west: %+v", c)
	}
}

func TestConfigValidateNamesEachBadField(t *testing.T) {
	c := DefaultConfig()
	c.BasePort = MaxBasePort + 1
	c.Restart.Min = 0
	err := c.Validate()
	want := map[string]bool{"binary": true, "encrypt_key_env": true, "port_base": true, "restart": true, "out": true}
	got := map[string]bool{}
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *federation.FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a *federation.FieldError", e)
		}
		got[fe.Field] = true
	}
	if len(got) != len(want) {
		t.Fatalf("fields %v, want %v (%v)", got, want, err)
	}
	for f := range want {
		if !got[f] {
			t.Errorf("no error on %s: %v", f, err)
		}
	}
	c = DefaultConfig()
	c.Binary, c.EncryptKeyEnv, c.Out = "/bin/true", "K", io.Discard
	if err := c.Validate(); err != nil {
		t.Errorf("a complete default config: %v", err)
	}
}

func newTestEnv(t *testing.T, dir string, base int) *Env {
	t.Helper()
	c := DefaultConfig()
	c.Binary, c.EncryptKeyEnv, c.Out, c.Dir, c.BasePort = "/bin/true", "K", io.Discard, dir, base
	e, err := New(c, Deps{
		GenerateKey: func() (string, error) { return "a2V5", nil },
		CreateToken: func(context.Context, string, federation.ClusterName) (string, error) {
			t.Error("CreateToken called")
			return "", nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestCatalogsListTheWorkloadsAndDecodeStrictly(t *testing.T) {
	e := newTestEnv(t, t.TempDir(), 7400)
	if err := e.writeCatalogs(); err != nil {
		t.Fatal(err)
	}
	for j, cr := range e.clusters {
		b, err := os.ReadFile(filepath.Join(cr.agentDir, "catalog.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		cat, err := agent.ParseFileCatalog(b)
		if err != nil {
			t.Fatalf("%s: %v", cr.spec.name, err)
		}
		if len(cat.Services) != len(topology[j].exports) {
			t.Fatalf("%s: %d services, want %d", cr.spec.name, len(cat.Services), len(topology[j].exports))
		}
		s := cat.Services[0]
		if !s.Export || len(s.Ports) != 1 || len(s.Endpoints) != 2 {
			t.Fatalf("%s: %+v", cr.spec.name, s)
		}
		for k, ep := range s.Endpoints {
			if want := cr.workloads[k].address; ep.Address != want || ep.Zone != cr.spec.locality.Zone() || !ep.Ready {
				t.Errorf("%s endpoint %d: %+v, want address %s in zone %s", cr.spec.name, k, ep, want, cr.spec.locality.Zone())
			}
		}
	}
	east, west, central := e.clusters[0], e.clusters[1], e.clusters[2]
	want := map[string]string{"east": "default/reviews http 8080 HTTP", "west": "default/reviews http 8080 HTTP", "central": "default/ratings tcp 9090 TCP"}
	for _, cr := range []*clusterRun{east, west, central} {
		ex := cr.spec.exports[0].svc
		if got := ex.key.String() + " " + ex.portName + " " + strconv.Itoa(int(ex.port)) + " " + ex.protocol; got != want[cr.spec.name.String()] {
			t.Errorf("%s exports %s, want %s", cr.spec.name, got, want[cr.spec.name.String()])
		}
	}
}

func TestStateDirectoryRefusesAnotherBasePort(t *testing.T) {
	dir := t.TempDir()
	if err := newTestEnv(t, dir, 7400).prepareDir(); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(dir, "encrypt.key"))
	if err != nil || string(key) != "a2V5\n" {
		t.Fatalf("encrypt.key = %q, %v", key, err)
	}
	if err := newTestEnv(t, dir, 7400).prepareDir(); err != nil {
		t.Fatalf("same plan again: %v", err)
	}
	if err := newTestEnv(t, dir, 8400).prepareDir(); !errors.Is(err, ErrPlanChanged) {
		t.Fatalf("another base port: %v, want ErrPlanChanged", err)
	}
}

func startWorkload(t *testing.T, kind WorkloadKind) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg := WorkloadConfig{Kind: kind, Listen: ln.Addr().String(), Service: federation.MustServiceKey("default/reviews"),
		Cluster: federation.MustClusterName("east"), Zone: "us-east-1a", Instance: "reviews-1"}
	go func() { done <- ServeWorkload(ctx, ln, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeWorkload: %v", err)
		}
	})
	return ln.Addr().String()
}

func TestHTTPWorkloadAnswersWithItsIdentity(t *testing.T) {
	addr := startWorkload(t, KindHTTP)
	resp, err := http.Get("http://" + addr + "/some/path")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var r Reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	want := Reply{Service: "default/reviews", Cluster: "east", Zone: "us-east-1a", Instance: "reviews-1", Method: "GET", Path: "/some/path", Host: addr}
	if r != want {
		t.Errorf("reply %+v, want %+v", r, want)
	}
}

func TestTCPWorkloadEchoesAndHalfCloses(t *testing.T) {
	addr := startWorkload(t, KindTCP)
	if err := Echo(t.Context(), addr, []byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	msg := bytes.Repeat([]byte("x"), 100_000)
	go func() {
		_, _ = c.Write(msg)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c) // ends when the echo half-closes in turn
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echoed %d bytes (%v), want %d", len(got), err, len(msg))
	}
}

func TestWorkloadConfigValidateNamesEachBadField(t *testing.T) {
	err := WorkloadConfig{Kind: "udp", Listen: "nope"}.Validate()
	for _, f := range []string{"kind", "listen", "service", "cluster", "instance"} {
		found := false
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			var fe *federation.FieldError
			if errors.As(e, &fe) && fe.Field == f {
				found = true
			}
		}
		if !found {
			t.Errorf("no error on %s: %v", f, err)
		}
	}
}

func TestClusterSetIPPrefixesAreDistinctPerClusterAndBasePortAndAvoid127001(t *testing.T) {
	seen := map[netip.Prefix]string{}
	for _, base := range []int{MinBasePort, 7400, 7401, MaxBasePort} {
		p := Ports{Base: base}
		for j := range topology {
			pre := p.ClusterSetIPs(j)
			if !pre.Addr().Is4() || pre.Addr().As4()[0] != 127 || pre.Overlaps(netip.MustParsePrefix("127.0.0.0/24")) {
				t.Errorf("base %d cluster %d: %v, want inside 127.0.0.0/8 and off 127.0.0.0/24", base, j, pre)
			}
			for q, who := range seen {
				if q.Overlaps(pre) {
					t.Errorf("base %d cluster %d: %v overlaps %v (%s)", base, j, pre, q, who)
				}
			}
			seen[pre] = fmt.Sprintf("base %d cluster %d", base, j)
		}
	}
}
