package eastwest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshfed/meshfed/gateway/gatewayclient"
)

// httpUpstream is an HTTP server with a handler of the test's choosing,
// exported by east; west imports it. It returns west's egress address.
// egressGateways maps an egress address made by httpPair to its gateway.
var egressGateways = map[string]*Gateway{}

func gatewayOf(t testing.TB, addr string) *Gateway {
	g := egressGateways[addr]
	if g == nil {
		t.Fatalf("no gateway for %s", addr)
	}
	return g
}

func httpPair(t testing.TB, h http.Handler, opts ...func(*http.Server)) string {
	t.Helper()
	east, west := newCluster(t, "east", "us-east", "us-east-1a"), newCluster(t, "west", "us-west", "us-west-1a")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	for _, o := range opts {
		o(srv)
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Protocols = &p
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ep := netip.MustParseAddrPort(ln.Addr().String())
	sp := port("http", 8080, "HTTP")
	eastGW := startGateway(t, east, newState(east, nil, []*gatewayclient.LocalService{localService("default/web", sp, ep)}, remote{c: west}), nil, west)
	egress := freePort(t)
	r := remote{c: east, gws: []string{eastGW.addr}, ready: 1}
	westGW := startGateway(t, west, newState(west, []*gatewayclient.Import{importOf("default/web", sp, egress, r)}, nil, r), nil, east)
	waitFor(t, 5*time.Second, func() error {
		if !westGW.g.clusterUp(east.name) {
			return fmt.Errorf("east not up")
		}
		return nil
	})
	a := fmt.Sprintf("127.0.0.1:%d", egress)
	egressGateways[a] = westGW.g
	return a
}

func TestHTTPEgressCarriesBodiesHeadUpgradesAndH2(t *testing.T) {
	addr := httpPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Header.Get("Upgrade") == "echo":
			// A protocol switch: after 101, echo raw bytes.
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", "echo")
			w.WriteHeader(http.StatusSwitchingProtocols)
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer func() { _ = c.Close() }()
			_, _ = io.Copy(c, brw)
		case r.Method == http.MethodPost:
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Proto", r.Proto)
			_, _ = fmt.Fprintf(w, "%s got %d bytes", r.Proto, len(b))
		default:
			w.Header().Set("X-Proto", r.Proto)
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "hello")
		}
	}))
	c := &http.Client{Timeout: 5 * time.Second}
	// A chunked upload (unknown length), then a HEAD, on one connection.
	body := strings.Repeat("x", 300_000)
	resp, err := c.Post("http://"+addr+"/up", "text/plain", io.MultiReader(strings.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if string(b) != "HTTP/1.1 got 300000 bytes" {
		t.Fatalf("chunked POST: %q", b)
	}
	resp, err = c.Head("http://" + addr + "/h")
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != 5 {
		t.Fatalf("HEAD: %v %v", resp, err)
	}
	_ = resp.Body.Close()
	// Expect: 100-continue goes through.
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/c", bytes.NewReader([]byte("abc")))
	req.Header.Set("Expect", "100-continue")
	resp, err = (&http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{ExpectContinueTimeout: time.Second}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if string(b) != "HTTP/1.1 got 3 bytes" {
		t.Fatalf("100-continue POST: %q", b)
	}
	// h2c with prior knowledge (what gRPC clients do) takes the HTTP/2 path;
	// the port is declared HTTP (HTTP/1.1), so the upstream speaks that (a
	// port declared HTTP2 or GRPC gets h2 upstream too).
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Protocols: &p}}
	resp, err = h2.Post("http://"+addr+"/h2", "text/plain", strings.NewReader("abcd"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.ProtoMajor != 2 || string(b) != "HTTP/1.1 got 4 bytes" {
		t.Fatalf("h2c: %s %q", resp.Proto, b)
	}
	// An upgrade: 101, then raw bytes both ways.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_, _ = io.WriteString(conn, "GET /u HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(conn)
	up, err := http.ReadResponse(br, nil)
	if err != nil || up.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", up, err)
	}
	_, _ = io.WriteString(conn, "raw bytes")
	got := make([]byte, 9)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "raw bytes" {
		t.Fatalf("after the upgrade: %q %v", got, err)
	}
}

func TestHTTPEgressRetriesIdempotentRequestsOn503Only(t *testing.T) {
	// east answers 503 to everything; central answers 200. A GET fails over
	// to central; a POST gets east's 503 (it may have done something).
	east, central, west := newCluster(t, "east", "us-east", "us-east-1a"), newCluster(t, "central", "eu-central", "eu-central-1a"), newCluster(t, "west", "us-east", "us-east-1b")
	var eastHits atomic.Int32
	sick, _ := httpHandlerServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		eastHits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		http.Error(w, "east is sick", http.StatusServiceUnavailable)
	}))
	ok, _ := httpEcho(t, "central")
	sp := port("http", 8080, "HTTP")
	eastGW := startGateway(t, east, newState(east, nil, []*gatewayclient.LocalService{localService("default/web", sp, sick)}, remote{c: west}), nil, west)
	centralGW := startGateway(t, central, newState(central, nil, []*gatewayclient.LocalService{localService("default/web", sp, ok)}, remote{c: west}), nil, west)
	egress := freePort(t)
	re := remote{c: east, gws: []string{eastGW.addr}, ready: 1}
	rc := remote{c: central, gws: []string{centralGW.addr}, ready: 1}
	westGW := startGateway(t, west, newState(west, []*gatewayclient.Import{importOf("default/web", sp, egress, re, rc)}, nil, re, rc),
		func(c *Config) { c.ConsecutiveErrors = 1000 }, east, central)
	waitFor(t, 5*time.Second, func() error {
		if !westGW.g.clusterUp(east.name) || !westGW.g.clusterUp(central.name) {
			return fmt.Errorf("not both up")
		}
		return nil
	})
	url := fmt.Sprintf("http://127.0.0.1:%d/x", egress)
	for range 20 {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "central") {
			t.Fatalf("GET with east (same region) answering 503: %d %q, want central's 200", resp.StatusCode, b)
		}
	}
	if eastHits.Load() == 0 {
		t.Fatal("east was never tried: the test shows nothing")
	}
	resp, err := http.Post(url, "text/plain", strings.NewReader("order"))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("POST: %d, want east's 503 passed through (a POST is not retried)", resp.StatusCode)
	}
}

func httpHandlerServer(t testing.TB, h http.Handler) (netip.AddrPort, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	stop := func() { _ = srv.Close() }
	t.Cleanup(stop)
	return netip.MustParseAddrPort(ln.Addr().String()), stop
}

// TestPooledUpstreamClosedByTheServerIsNotUsed: the upstream server closes
// its idle keep-alive connections between requests; the gateway notices
// and sends the next request, a POST that must not be replayed, on a
// fresh connection: it succeeds.
func TestPooledUpstreamClosedByTheServerIsNotUsed(t *testing.T) {
	var srv *http.Server
	closed := make(chan struct{}, 16)
	addr := httpPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}), func(s *http.Server) {
		srv = s
		s.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed {
				closed <- struct{}{}
			}
		}
	})
	c := &http.Client{Timeout: 5 * time.Second}
	for i := range 5 {
		resp, err := c.Post("http://"+addr+"/order", "text/plain", strings.NewReader("one"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("POST %d after the server closed its idle connections: %d %q", i, resp.StatusCode, b)
		}
		// The upstream connection goes back to the gateway's pool; then the
		// server closes its idle connection (as its keep-alive timeout
		// would); wait until it did and the gateway's pool saw it.
		waitFor(t, 5*time.Second, func() error {
			if n := gatewayOf(t, addr).egress.pool.prune(); n != 1 {
				return fmt.Errorf("%d idle upstream connections, want the one just used", n)
			}
			return nil
		})
		waitFor(t, 5*time.Second, func() error {
			// Closes idle connections; the server may still be marking
			// this one idle, so again until it is closed.
			srv.SetKeepAlivesEnabled(false)
			srv.SetKeepAlivesEnabled(true)
			select {
			case <-closed:
				return nil
			default:
				return errors.New("the server has not closed its idle connection")
			}
		})
		waitFor(t, 5*time.Second, func() error {
			if n := gatewayOf(t, addr).egress.pool.prune(); n != 0 {
				return fmt.Errorf("%d idle upstream connections still look open", n)
			}
			return nil
		})
	}
}

// TestH2CRequestWithABodyFailsOverWhole: over h2c (the reverse-proxy
// path), a POST whose first choice cannot connect (east's only endpoint is
// dead) goes to central with its body whole.
func TestH2CRequestWithABodyFailsOverWhole(t *testing.T) {
	east, central, west := newCluster(t, "east", "us-east", "us-east-1a"), newCluster(t, "central", "eu-central", "eu-central-1a"), newCluster(t, "west", "us-east", "us-east-1b")
	dead, stopDead := httpHandlerServer(t, http.NotFoundHandler())
	stopDead()
	ok, _ := httpHandlerServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = fmt.Fprintf(w, "central got %d bytes", len(b))
	}))
	sp := port("http", 8080, "HTTP")
	eastGW := startGateway(t, east, newState(east, nil, []*gatewayclient.LocalService{localService("default/web", sp, dead)}, remote{c: west}), nil, west)
	centralGW := startGateway(t, central, newState(central, nil, []*gatewayclient.LocalService{localService("default/web", sp, ok)}, remote{c: west}), nil, west)
	egress := freePort(t)
	re := remote{c: east, gws: []string{eastGW.addr}, ready: 1}
	rc := remote{c: central, gws: []string{centralGW.addr}, ready: 1}
	westGW := startGateway(t, west, newState(west, []*gatewayclient.Import{importOf("default/web", sp, egress, re, rc)}, nil, re, rc), nil, east, central)
	waitFor(t, 5*time.Second, func() error {
		if !westGW.g.clusterUp(east.name) || !westGW.g.clusterUp(central.name) {
			return errors.New("not both up")
		}
		return nil
	})
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Protocols: &p}}
	body := strings.Repeat("b", 100_000)
	for i := range 5 {
		resp, err := h2.Post(fmt.Sprintf("http://127.0.0.1:%d/x", egress), "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if want := "central got 100000 bytes"; string(b) != want {
			t.Fatalf("POST %d over h2c with east's endpoint dead: %d %q, want %q", i, resp.StatusCode, b, want)
		}
	}
}

// TestHTTPEgressDropsHopByHopHeaders: the HTTP/1.1 path forwards neither
// the client's hop-by-hop headers (those its Connection header names,
// Keep-Alive, Proxy-Authorization; "Te" only as "trailers") nor the
// server's, as the HTTP/2 path (httputil.ReverseProxy) does not; the
// client's "Connection: close" closes the client's connection, not the
// pooled upstream one.
func TestHTTPEgressDropsHopByHopHeaders(t *testing.T) {
	type seen struct {
		header http.Header
		close  bool
	}
	got := make(chan seen, 4)
	addr := httpPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Header.Clone(), r.Close}
		w.Header().Set("Connection", "X-Server-Hop")
		w.Header().Set("X-Server-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Server-End", "kept")
		_, _ = io.WriteString(w, "ok")
	}))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	_, _ = io.WriteString(conn, "GET /a HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n"+
		"Keep-Alive: timeout=9\r\nProxy-Authorization: Basic eDp5\r\nTe: trailers, deflate\r\nX-End: kept\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	s := <-got
	for _, name := range []string{"X-Hop", "Keep-Alive", "Proxy-Authorization", "Connection"} {
		if v, ok := s.header[name]; ok {
			t.Errorf("the server got %s: %q from the client, a hop-by-hop header", name, v)
		}
	}
	if s.header.Get("X-End") != "kept" || s.header.Get("Te") != "trailers" {
		t.Errorf("the server got X-End %q and Te %q, want kept and trailers", s.header.Get("X-End"), s.header.Get("Te"))
	}
	for _, name := range []string{"X-Server-Hop", "Keep-Alive"} {
		if v, ok := resp.Header[name]; ok {
			t.Errorf("the client got %s: %q from the server, a hop-by-hop header", name, v)
		}
	}
	if resp.Header.Get("X-Server-End") != "kept" {
		t.Errorf("the client got X-Server-End %q, want kept", resp.Header.Get("X-Server-End"))
	}
	// Connection: close ends the client's connection after the response;
	// the server is not told to close the pooled one.
	_, _ = io.WriteString(conn, "GET /b HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if s := <-got; s.close {
		t.Error(`the server was asked to close: the client's "Connection: close" went upstream`)
	}
	if !resp.Close {
		t.Error(`the response to "Connection: close" does not say it closes`)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("after the response to Connection: close, read %v, want EOF", err)
	}
}
