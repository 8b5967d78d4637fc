package eastwest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshfed/meshfed/gateway/gatewayclient"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
	"github.com/meshfed/meshfed/internal/spiretest"
	"github.com/meshfed/meshfed/trust"
)

// pair starts east exporting default/echo (TCP) and default/web (HTTP)
// and west importing both from east.
type pairEnv struct {
	east, west       *cluster
	eastGW, westGW   *gw
	tcpPort, webPort uint16 // west's egress ports
}

func startPairB(b *testing.B) *pairEnv { return startPair(b) }

func startPair(t testing.TB) *pairEnv {
	t.Helper()
	east, west := newCluster(t, "east", "us-east", "us-east-1a"), newCluster(t, "west", "us-west", "us-west-1a")
	tcpEP := tcpEcho(t)
	webEP, _ := httpEcho(t, "east")
	tcpSP, webSP := port("tcp", 9090, "TCP"), port("http", 8080, "HTTP")
	eastGW := startGateway(t, east, newState(east, nil, []*gatewayclient.LocalService{
		localService("default/echo", tcpSP, tcpEP), localService("default/web", webSP, webEP)}, remote{c: west}), nil, west)
	p := &pairEnv{east: east, west: west, eastGW: eastGW, tcpPort: freePort(t), webPort: freePort(t)}
	r := remote{c: east, gws: []string{eastGW.addr}, ready: 1}
	p.westGW = startGateway(t, west, newState(west, []*gatewayclient.Import{
		importOf("default/echo", tcpSP, p.tcpPort, r), importOf("default/web", webSP, p.webPort, r)}, nil, r), nil, east)
	waitFor(t, 5*time.Second, func() error {
		if _, up := p.westGW.g.pool.counts(); up != 1 {
			return errors.New("east's gateway not up in west's pool")
		}
		return nil
	})
	// east must know west as a member to admit it: it does (remote{c: west}).
	return p
}

func TestCrossClusterTCPAndHTTPThroughTwoGateways(t *testing.T) {
	p := startPair(t)
	// TCP: an echo, both directions, with a half-close.
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(p.tcpPort)))
	if err != nil {
		t.Fatal(err)
	}
	msg := strings.Repeat("meshfed ", 100_000) // 800 kB: more than the windows' first flight
	go func() {
		_, _ = io.WriteString(c, msg)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	_ = c.Close()
	if err != nil || string(got) != msg {
		t.Fatalf("TCP echo through two gateways: %d bytes back of %d, err %v", len(got), len(msg), err)
	}
	// HTTP: requests over one keep-alive connection.
	p.getN(t, "r", 20)
}

// getN sends GET /<prefix>/<i>, for i below n, through the pair's HTTP
// egress port on one keep-alive connection, and fails the test unless
// each is answered 200 by east's server.
func (p *pairEnv) getN(t *testing.T, prefix string, n int) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	for i := range n {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/%s/%d", p.webPort, prefix, i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if want := fmt.Sprintf("east /%s/%d", prefix, i); string(b) != want || resp.StatusCode != 200 {
			t.Fatalf("HTTP through two gateways: %d %q, want 200 %q", resp.StatusCode, b, want)
		}
	}
}

// dialAs connects to a gateway's ingress as the SPIFFE ID id of cluster c
// (its SVID signed by c's CA, trusting c's and the gateway's bundles).
func dialAs(t *testing.T, ctx context.Context, c *cluster, id spiffeid.ID, to *gw) (*quic.Conn, error) {
	t.Helper()
	svid, err := c.ca.IssueX509SVID(id)
	if err != nil {
		t.Fatal(err)
	}
	bs := trust.NewBundleSet()
	_ = bs.Set(c.bundle)
	_ = bs.Set(to.c.bundle)
	tc := trust.ClientTLS(staticSVID{svid}, bs, trust.AuthorizeID(trust.GatewayID(to.c.td)))
	tc.NextProtos = []string{gatewayv1.ALPN}
	return quic.DialAddr(ctx, to.addr, tc, &quic.Config{EnableDatagrams: true})
}

// rawStream opens a stream to a gateway as a member cluster's gateway
// would, sends hdr and returns the status.
func rawStream(t *testing.T, from *cluster, to *gw, hdr *Header) Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := dialAs(t, ctx, from, trust.GatewayID(from.td), to)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = qc.CloseWithError(0, "") }()
	s, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := AppendHeader(nil, hdr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(b); err != nil {
		t.Fatal(err)
	}
	st, err := ReadStatus(s)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestIngressRefusesWhatThisClusterDoesNotExport(t *testing.T) {
	p := startPair(t)
	for _, c := range []struct {
		h    Header
		want Code
	}{
		{Header{Kind: KindConnect, Service: "default/secret", Port: 9090, Source: "west"}, CodeUnknownService},
		{Header{Kind: KindConnect, Service: "default/echo", Port: 1234, Source: "west"}, CodeUnknownService},
		{Header{Kind: KindConnect, Service: "default/echo", Port: 9090, Source: "central"}, CodeForbidden},
		{Header{Kind: KindConnect, Service: "default/echo", Port: 9090, Source: "west"}, CodeOK},
	} {
		if st := rawStream(t, p.west, p.eastGW, &c.h); st.Code != c.want {
			t.Errorf("%s:%d from %s: %v, want %v", c.h.Service, c.h.Port, c.h.Source, st, c.want)
		}
	}
}

func TestIngressRefusesUnfederatedAndExternalTrustDomains(t *testing.T) {
	p := startPair(t)
	// An unfederated cluster: east has no bundle for it. The handshake fails.
	rogue := newCluster(t, "rogue", "us-east", "us-east-1a")
	if err := dialOnly(t, rogue, p.eastGW, trust.GatewayID(rogue.td)); err == nil {
		t.Error("a gateway of an unfederated trust domain was admitted")
	}
	// An external trust domain (a SPIRE server's, say): east holds its
	// bundle, so its SVIDs verify, but it is no member cluster's gateway.
	spire := newCluster(t, "spire", "us-east", "us-east-1a")
	if err := p.eastGW.g.bundles.Set(spire.bundle); err != nil {
		t.Fatal(err)
	}
	if err := dialOnly(t, spire, p.eastGW, trust.GatewayID(spire.td)); err == nil {
		t.Error("a peer of an external trust domain was admitted as a gateway")
	}
	// A member's non-gateway identity is refused too.
	if err := dialOnly(t, p.west, p.eastGW, trust.AgentID(p.west.td)); err == nil {
		t.Error("a member cluster's agent identity was admitted as a gateway")
	}
	// The member's gateway itself is admitted.
	if err := dialOnly(t, p.west, p.eastGW, trust.GatewayID(p.west.td)); err != nil {
		t.Errorf("west's gateway was refused: %v", err)
	}
}

// dialOnly connects to a gateway's ingress as id of c and opens a probe
// stream; it returns the first error.
func dialOnly(t *testing.T, c *cluster, to *gw, id spiffeid.ID) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	qc, err := dialAs(t, ctx, c, id, to)
	if err != nil {
		return err
	}
	defer func() { _ = qc.CloseWithError(0, "") }()
	s, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	b, _ := AppendHeader(nil, &Header{Kind: KindProbe, Source: c.name.String()})
	if _, err := s.Write(b); err != nil {
		return err
	}
	_, err = ReadStatus(bufio.NewReader(s))
	return err
}

var _ = tls.VersionTLS13

// TestResetReachesTheClientAsAReset: an endpoint that sends some bytes and
// then resets its connection must look like that to the client through two
// gateways, not like a complete response followed by a clean end.
func TestResetReachesTheClientAsAReset(t *testing.T) {
	east, west := newCluster(t, "east", "us-east", "us-east-1a"), newCluster(t, "west", "us-west", "us-west-1a")
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
			_, _ = io.WriteString(c, "partial")
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
		}
	}()
	sp := port("tcp", 9090, "TCP")
	eastGW := startGateway(t, east, newState(east, nil, []*gatewayclient.LocalService{localService("default/cut", sp, netip.MustParseAddrPort(ln.Addr().String()))}, remote{c: west}), nil, west)
	egress := freePort(t)
	r := remote{c: east, gws: []string{eastGW.addr}, ready: 1}
	westGW := startGateway(t, west, newState(west, []*gatewayclient.Import{importOf("default/cut", sp, egress, r)}, nil, r), nil, east)
	waitFor(t, 5*time.Second, func() error {
		if !westGW.g.clusterUp(east.name) {
			return errors.New("east not up")
		}
		return nil
	})
	c, err := dialTCP(egress)
	if errors.Is(err, syscall.ECONNRESET) {
		return // the reset came before connect returned: seen as one
	}
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	got, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read %q, then %v; want the endpoint's reset", got, err)
	}
	t.Logf("read %q, then %v", got, err)
}

// TestSPIREIdentityIsNoGateway: a real SPIRE server mints an X509-SVID
// whose path even says meshfed/gateway; east federates with SPIRE's trust
// domain (its bundle is in east's set, so the SVID verifies), and still
// refuses it as a peer: SPIRE's trust domain is no member cluster's.
func TestSPIREIdentityIsNoGateway(t *testing.T) {
	p := startPair(t)
	spire := spiretest.Start(t, "spire.example", "")
	out, err := spire.Run("bundle", "show", "-format", "pem")
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("spire.example")
	roots, err := x509bundle.Parse(td, out)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.eastGW.g.bundles.Set(spiffebundle.FromX509Authorities(td, roots.X509Authorities())); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(spire.Dir(), "svid")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := spire.Run("x509", "mint", "-spiffeID", "spiffe://spire.example/meshfed/gateway", "-write", dir); err != nil {
		t.Fatal(err)
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, "svid.pem"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	svid, err := x509svid.Parse(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	// The SVID is SPIRE's own and verifies against the bundle east holds.
	if _, _, err := x509svid.Verify(svid.Certificates, p.eastGW.g.bundles); err != nil {
		t.Fatalf("the SPIRE SVID does not verify against east's bundles, so the test would show nothing: %v", err)
	}
	bs := trust.NewBundleSet()
	_ = bs.Set(p.east.bundle)
	tc := trust.ClientTLS(staticSVID{svid}, bs, trust.AuthorizeID(trust.GatewayID(p.east.td)))
	tc.NextProtos = []string{gatewayv1.ALPN}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, p.eastGW.addr, tc, &quic.Config{EnableDatagrams: true})
	if err == nil {
		defer func() { _ = qc.CloseWithError(0, "") }()
		if st := probeStatus(ctx, qc, "west"); st == nil {
			t.Fatal("east's gateway admitted and answered a SPIRE identity as a peer gateway")
		}
	}
}

// probeStatus opens a stream and sends a probe header; it returns the
// error that ended it, nil if it was answered.
func probeStatus(ctx context.Context, qc *quic.Conn, source string) error {
	s, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	b, _ := AppendHeader(nil, &Header{Kind: KindProbe, Source: source})
	if _, err := s.Write(b); err != nil {
		return err
	}
	_, err = ReadStatus(s)
	return err
}

// TestImportWithAClusterSetIPIsServedThereOnTheServicesOwnPort: an import
// that carries a ClusterSetIP (the file source with --clusterset-ips, as in
// meshfed dev) is served at ClusterSetIP:service port, besides its egress
// port, and the listener goes with the import.
func TestImportWithAClusterSetIPIsServedThereOnTheServicesOwnPort(t *testing.T) {
	east, west := newCluster(t, "east", "us-east", "us-east-1a"), newCluster(t, "west", "us-west", "us-west-1a")
	webEP, _ := httpEcho(t, "east")
	webSP := port("http", freePort(t), "HTTP") // the service's own port, free on the ClusterSetIP too
	eastGW := startGateway(t, east, newState(east, nil, []*gatewayclient.LocalService{localService("default/web", webSP, webEP)}, remote{c: west}), nil, west)
	r := remote{c: east, gws: []string{eastGW.addr}, ready: 1}
	im := importOf("default/web", webSP, freePort(t), r)
	im.ClusterSetIP = netip.MustParseAddr("127.0.77.1")
	westGW := startGateway(t, west, newState(west, []*gatewayclient.Import{im}, nil, r), nil, east)
	url := fmt.Sprintf("http://127.0.77.1:%d/x", webSP.Port)
	client := &http.Client{Timeout: 5 * time.Second}
	waitFor(t, 10*time.Second, func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if string(b) != "east /x" {
			return fmt.Errorf("%s answered %d %q", url, resp.StatusCode, b)
		}
		return nil
	})
	// The import goes: so does its ClusterSetIP listener.
	westGW.src.set(newState(west, nil, nil, r))
	waitFor(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.77.1:%d", webSP.Port))
		if err == nil {
			_ = c.Close()
			return errors.New("still listening")
		}
		return nil
	})
}

// TestQUICStatsOfRemoteGatewaysAreExported: after traffic, the egress
// gateway's registry reports the QUIC connection to the remote gateway:
// packets sent, an RTT and a congestion window, labelled with the cluster
// and address.
func TestQUICStatsOfRemoteGatewaysAreExported(t *testing.T) {
	p := startPair(t)
	p.getN(t, "q", 5)
	mfs, err := p.westGW.g.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "meshfed_gateway_quic_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["cluster"] != "east" || labels["address"] != p.eastGW.addr {
				t.Errorf("%s labelled %v, want cluster east, address %s", mf.GetName(), labels, p.eastGW.addr)
			}
			got[mf.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	for _, name := range []string{"meshfed_gateway_quic_packets_sent_total", "meshfed_gateway_quic_smoothed_rtt_seconds",
		"meshfed_gateway_quic_min_rtt_seconds", "meshfed_gateway_quic_congestion_window_bytes"} {
		if got[name] <= 0 {
			t.Errorf("%s = %v, want > 0 (all: %v)", name, got[name], got)
		}
	}
	if _, ok := got["meshfed_gateway_quic_packets_lost_total"]; !ok {
		t.Errorf("meshfed_gateway_quic_packets_lost_total missing (all: %v)", got)
	}
}

// TestQUICPacketCountersCarryOnAcrossReconnections: the packet counters
// of a remote gateway add up over its connections. After the connection
// carried traffic and then closed, the egress gateway dials anew, and the
// counter it reports is not below what it reported before (a counter that
// restarted with the connection would be).
func TestQUICPacketCountersCarryOnAcrossReconnections(t *testing.T) {
	p := startPair(t)
	p.getN(t, "c", 100)
	sent := func() float64 {
		mfs, err := p.westGW.g.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "meshfed_gateway_quic_packets_sent_total" {
				for _, m := range mf.GetMetric() {
					return m.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
	before := sent()
	if before < 100 {
		t.Fatalf("packets sent after 100 requests: %v, want at least 100", before)
	}
	peers := p.westGW.g.pool.all()
	if len(peers) != 1 {
		t.Fatalf("west's pool holds %d gateways, want 1 (east's)", len(peers))
	}
	old := peers[0].conn()
	if old == nil {
		t.Fatal("no connection to east's gateway")
	}
	_ = old.CloseWithError(0, "test: reconnect")
	waitFor(t, 10*time.Second, func() error {
		if qc := peers[0].conn(); qc == nil || qc == old {
			return errors.New("not reconnected yet")
		}
		return nil
	})
	if after := sent(); after < before {
		t.Errorf("packets sent fell from %v to %v across a reconnection", before, after)
	}
}
