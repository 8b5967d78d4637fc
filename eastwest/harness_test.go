package eastwest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/gateway/gatewayclient"
	"github.com/meshfed/meshfed/internal/wait"
	"github.com/meshfed/meshfed/trust"
)

// The harness: real CAs per cluster, real SVIDs, real QUIC and TLS on
// loopback, real TCP and HTTP echo servers; the config comes from a
// staticSource instead of an agent.

type memStore struct{ b []byte }

func (m *memStore) Load() ([]byte, error) {
	if m.b == nil {
		return nil, trust.ErrNotFound
	}
	return m.b, nil
}
func (m *memStore) Save(b []byte) error { m.b = append([]byte(nil), b...); return nil }

// cluster is one test cluster's trust: its CA and bundle.
type cluster struct {
	name     federation.ClusterName
	td       spiffeid.TrustDomain
	locality federation.Locality
	ca       *trust.CA
	bundle   *spiffebundle.Bundle
}

func newCluster(t testing.TB, name, region, zone string) *cluster {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString(name + ".meshfed.local")
	rc := trust.DefaultRootConfig()
	rc.TrustDomain = td
	root, err := trust.NewRootAuthority(rc, &memStore{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = root.Close() })
	ca, err := trust.NewCA(root, trust.DefaultCAConfig())
	if err != nil {
		t.Fatal(err)
	}
	b, err := root.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	loc, err := federation.NewLocality(region, zone, "")
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{name: federation.MustClusterName(name), td: td, locality: loc, ca: ca, bundle: b}
}

type staticSVID struct{ s *x509svid.SVID }

func (s staticSVID) GetX509SVID() (*x509svid.SVID, error) { return s.s, nil }

// staticSource is a Source whose state the test sets.
type staticSource struct {
	mu    sync.Mutex
	st    *gatewayclient.State
	watch []chan struct{}
}

func (s *staticSource) State() (*gatewayclient.State, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st, s.st != nil
}

func (s *staticSource) Watch() <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.watch = append(s.watch, ch)
	s.mu.Unlock()
	return ch
}

func (s *staticSource) set(st *gatewayclient.State) {
	s.mu.Lock()
	s.st = st
	for _, ch := range s.watch {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
}

// gw is a running gateway of a test cluster.
type gw struct {
	c      *cluster
	g      *Gateway
	src    *staticSource
	cancel context.CancelFunc
	done   chan error
	addr   string // ingress host:port
}

// startGateway starts a gateway for c trusting the bundles of peers.
func startGateway(t testing.TB, c *cluster, st *gatewayclient.State, mutate func(*Config), peers ...*cluster) *gw {
	t.Helper()
	svid, err := c.ca.IssueX509SVID(trust.GatewayID(c.td))
	if err != nil {
		t.Fatal(err)
	}
	bs := trust.NewBundleSet()
	for _, p := range append([]*cluster{c}, peers...) {
		if err := bs.Set(p.bundle); err != nil {
			t.Fatal(err)
		}
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Instance = c.name.String() + "-gw"
	cfg.EgressBind = netip.MustParseAddr("127.0.0.1")
	cfg.ConnectTimeout = time.Second
	cfg.ReconnectMax = 200 * time.Millisecond
	cfg.DrainTimeout = 2 * time.Second
	cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("gw", c.name.String())
	if mutate != nil {
		mutate(&cfg)
	}
	src := &staticSource{}
	src.set(st)
	g, err := New(cfg, Deps{Source: src, SVIDs: staticSVID{svid}, Bundles: bs, PacketConn: pc})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &gw{c: c, g: g, src: src, cancel: cancel, done: make(chan error, 1), addr: pc.LocalAddr().String()}
	go func() { w.done <- g.Run(ctx) }()
	select {
	case <-g.Ready():
	case err := <-w.done:
		t.Fatalf("gateway %s ended: %v", c.name, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("gateway %s not ready", c.name)
	}
	t.Cleanup(w.stop)
	return w
}

func (w *gw) stop() {
	w.cancel()
	err := <-w.done
	w.done <- nil // idempotent: a second stop gets nil
	if err != nil {
		panic(fmt.Sprintf("gateway %s: Run: %v", w.c.name, err))
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// echo servers

// tcpEcho echoes every connection; it returns its address.
func tcpEcho(t testing.TB) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// httpEcho answers every request with "<cluster> <path>"; it returns its
// address and a function that stops it.
func httpEcho(t testing.TB, name string) (netip.AddrPort, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go func() { _ = srv.Serve(ln) }()
	stop := func() { _ = srv.Close() }
	t.Cleanup(stop)
	return netip.MustParseAddrPort(ln.Addr().String()), stop
}

// state builders

func selfOf(c *cluster) gatewayclient.Self {
	return gatewayclient.Self{Cluster: c.name, Locality: c.locality, TrustDomain: c.td}
}

func port(name string, p uint16, proto string) gatewayclient.ServicePort {
	return gatewayclient.ServicePort{Name: name, Port: p, Protocol: proto}
}

// exporting returns a state for c exporting svc on sp with the given
// endpoints (all ready).
func localService(svc string, sp gatewayclient.ServicePort, eps ...netip.AddrPort) *gatewayclient.LocalService {
	ls := &gatewayclient.LocalService{Service: federation.MustServiceKey(svc), Ports: []gatewayclient.ServicePort{sp}}
	for _, e := range eps {
		ls.Endpoints = append(ls.Endpoints, gatewayclient.Endpoint{Addr: e.Addr(), Ports: map[string]uint16{sp.Name: e.Port()}, Ready: true, Serving: true})
	}
	return ls
}

// remote is an exporting cluster as an import sees it.
type remote struct {
	c     *cluster
	gws   []string
	ready uint32
}

func importOf(svc string, sp gatewayclient.ServicePort, egress uint16, from ...remote) *gatewayclient.Import {
	im := &gatewayclient.Import{Service: federation.MustServiceKey(svc), Ports: []gatewayclient.ImportPort{{ServicePort: sp, Egress: egress}}}
	for _, r := range from {
		im.Clusters = append(im.Clusters, gatewayclient.ImportCluster{Cluster: r.c.name, Groups: []gatewayclient.EndpointGroup{{Zone: r.c.locality.Zone(), Ready: r.ready, Serving: r.ready}}})
	}
	return im
}

func newState(self *cluster, imports []*gatewayclient.Import, local []*gatewayclient.LocalService, remotes ...remote) *gatewayclient.State {
	st := &gatewayclient.State{Revision: 1, Self: selfOf(self), Imports: map[federation.ServiceKey]*gatewayclient.Import{},
		Local: map[federation.ServiceKey]*gatewayclient.LocalService{}, Clusters: map[federation.ClusterName]*gatewayclient.RemoteCluster{}}
	for _, im := range imports {
		st.Imports[im.Service] = im
	}
	for _, ls := range local {
		st.Local[ls.Service] = ls
	}
	for _, r := range remotes {
		st.Clusters[r.c.name] = &gatewayclient.RemoteCluster{Name: r.c.name, TrustDomain: r.c.td, Locality: r.c.locality, Gateways: r.gws}
	}
	return st
}

// freePort returns a TCP port free at the moment.
func freePort(t testing.TB) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).AddrPort().Port()
}

// waitFor polls cond until it returns nil or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := wait.Poll(ctx, wait.Backoff{Min: 5 * time.Millisecond, Max: 20 * time.Millisecond}, "condition", func(context.Context) error { return cond() }); err != nil {
		t.Fatal(err)
	}
}

// kill stops the gateway as SIGKILL would: its socket closes at once and
// nothing is drained or said to peers.
func (w *gw) kill() {
	_ = w.g.pconn.Close()
	w.stop()
}

func dialTCP(port uint16) (net.Conn, error) {
	return net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(port)))
}
