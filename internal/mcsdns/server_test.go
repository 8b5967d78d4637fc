package mcsdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshfed/meshfed/federation"
)

// testServer runs a Server on loopback UDP and TCP until the test ends.
type testServer struct {
	s    *Server
	addr string // the same port for UDP and TCP
	reg  *prometheus.Registry
}

func startServer(t testing.TB, cfg Config, z *Zone) *testServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := NewServer(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	if z != nil {
		s.SetZone(z)
	}
	var pc net.PacketConn
	var ln net.Listener
	for range 20 { // the same free port for both transports
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		_ = pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{s: s, addr: pc.LocalAddr().String(), reg: reg}
}

func (ts *testServer) query(t testing.TB, net string, name string, qtype uint16, edns uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: net, Timeout: 2 * time.Second}
	if edns > 0 {
		c.UDPSize = edns
	}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	r, _, err := c.Exchange(m, ts.addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", net, name, dns.TypeToString[qtype], err)
	}
	if r.Id != m.Id {
		t.Fatalf("reply id %d, want %d", r.Id, m.Id)
	}
	return r
}

var (
	reviews = federation.MustServiceKey("default/reviews")
	db      = federation.MustServiceKey("shop/db")
	east    = federation.MustClusterName("east")
	west    = federation.MustClusterName("west")
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// headless builds a headless service with n endpoints per cluster in east
// and west, each with a hostname.
func headless(key federation.ServiceKey, n int) Service {
	s := Service{Key: key, Headless: true, Ports: []Port{{Name: "pg", Protocol: "TCP", Port: 5432}}}
	for i := range n {
		for j, c := range []federation.ClusterName{east, west} {
			s.Endpoints = append(s.Endpoints, Endpoint{Cluster: c, Hostname: fmt.Sprintf("db-%d", i),
				Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, byte(j), byte(i >> 8), byte(i)})}})
		}
	}
	return s
}

func sampleZone() *Zone {
	return NewZone(42, 0, []Service{
		{Key: reviews, IPs: []netip.Addr{addr("10.96.0.10"), addr("fd00::10")},
			Ports: []Port{{Name: "http", Protocol: "TCP", Port: 8080}, {Name: "dns", Protocol: "UDP", Port: 53}, {Protocol: "TCP", Port: 9000}}},
		headless(db, 2),
	})
}

func answers(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		out = append(out, strings.ReplaceAll(rr.String(), "\t", " "))
	}
	slices.Sort(out)
	return out
}

func TestClusterSetIPServiceAnswersAAndAAAAOverUDPAndTCP(t *testing.T) {
	ts := startServer(t, DefaultConfig(), sampleZone())
	for _, transport := range []string{"udp", "tcp"} {
		r := ts.query(t, transport, "reviews.default.svc.clusterset.local.", dns.TypeA, 0)
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
			t.Fatalf("%s: rcode %s, aa %v", transport, dns.RcodeToString[r.Rcode], r.Authoritative)
		}
		want := []string{"reviews.default.svc.clusterset.local. 5 IN A 10.96.0.10"}
		if got := answers(r); !slices.Equal(got, want) {
			t.Errorf("%s A: %q, want %q", transport, got, want)
		}
		r = ts.query(t, transport, "reviews.default.svc.clusterset.local.", dns.TypeAAAA, 0)
		want = []string{"reviews.default.svc.clusterset.local. 5 IN AAAA fd00::10"}
		if got := answers(r); !slices.Equal(got, want) {
			t.Errorf("%s AAAA: %q, want %q", transport, got, want)
		}
	}
}

func TestAnswerKeepsTheQuestionsCase(t *testing.T) {
	ts := startServer(t, DefaultConfig(), sampleZone())
	r := ts.query(t, "udp", "ReViEwS.Default.svc.ClusterSet.local.", dns.TypeA, 0)
	if len(r.Answer) != 1 || r.Answer[0].Header().Name != "ReViEwS.Default.svc.ClusterSet.local." {
		t.Fatalf("answer %v, want one A owned by the name as asked", r.Answer)
	}
}

func TestNamedPortsHaveSRVRecordsWithTheTargetsAddresses(t *testing.T) {
	ts := startServer(t, DefaultConfig(), sampleZone())
	r := ts.query(t, "udp", "_http._tcp.reviews.default.svc.clusterset.local.", dns.TypeSRV, 0)
	want := []string{"_http._tcp.reviews.default.svc.clusterset.local. 5 IN SRV 0 100 8080 reviews.default.svc.clusterset.local."}
	if got := answers(r); !slices.Equal(got, want) {
		t.Errorf("SRV: %q, want %q", got, want)
	}
	if len(r.Extra) != 2 {
		t.Errorf("additional: %v, want the target's A and AAAA", r.Extra)
	}
	r = ts.query(t, "udp", "_dns._udp.reviews.default.svc.clusterset.local.", dns.TypeSRV, 0)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.SRV).Port != 53 {
		t.Errorf("UDP port SRV: %v", r.Answer)
	}
	// The protocol is part of the name.
	if r := ts.query(t, "udp", "_http._udp.reviews.default.svc.clusterset.local.", dns.TypeSRV, 0); r.Rcode != dns.RcodeNameError {
		t.Errorf("_http._udp: %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	// Headless: one SRV per endpoint with a hostname, to its own name.
	r = ts.query(t, "tcp", "_pg._tcp.db.shop.svc.clusterset.local.", dns.TypeSRV, 0)
	want = []string{
		"_pg._tcp.db.shop.svc.clusterset.local. 5 IN SRV 0 25 5432 db-0.east.db.shop.svc.clusterset.local.",
		"_pg._tcp.db.shop.svc.clusterset.local. 5 IN SRV 0 25 5432 db-0.west.db.shop.svc.clusterset.local.",
		"_pg._tcp.db.shop.svc.clusterset.local. 5 IN SRV 0 25 5432 db-1.east.db.shop.svc.clusterset.local.",
		"_pg._tcp.db.shop.svc.clusterset.local. 5 IN SRV 0 25 5432 db-1.west.db.shop.svc.clusterset.local.",
	}
	if got := answers(r); !slices.Equal(got, want) {
		t.Errorf("headless SRV: %q, want %q", got, want)
	}
}

func TestHeadlessServiceResolvesToEveryEndpointAndEachEndpointByName(t *testing.T) {
	ts := startServer(t, DefaultConfig(), sampleZone())
	r := ts.query(t, "udp", "db.shop.svc.clusterset.local.", dns.TypeA, 0)
	if len(r.Answer) != 4 {
		t.Fatalf("headless A: %v, want the 4 endpoints", answers(r))
	}
	r = ts.query(t, "udp", "db-1.west.db.shop.svc.clusterset.local.", dns.TypeA, 0)
	want := []string{"db-1.west.db.shop.svc.clusterset.local. 5 IN A 10.1.0.1"}
	if got := answers(r); !slices.Equal(got, want) {
		t.Errorf("endpoint A: %q, want %q", got, want)
	}
}

func TestMissingNamesAreNXDOMAINAndMissingTypesNODATAWithTheSOA(t *testing.T) {
	ts := startServer(t, DefaultConfig(), sampleZone())
	for _, c := range []struct {
		name  string
		qtype uint16
		rcode int
	}{
		{"nope.default.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError},
		{"reviews.other.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError},
		{"db-9.east.db.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError},
		{"x.reviews.default.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError},
		{"reviews.default.svc.clusterset.local.", dns.TypeMX, dns.RcodeSuccess},
		{"reviews.default.svc.clusterset.local.", dns.TypeTXT, dns.RcodeSuccess},
		{"_http._tcp.reviews.default.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess},
		// Empty non-terminals exist.
		{"default.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess},
		{"svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess},
		{"east.db.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess},
		{"_tcp.reviews.default.svc.clusterset.local.", dns.TypeSRV, dns.RcodeSuccess},
		{"clusterset.local.", dns.TypeA, dns.RcodeSuccess},
	} {
		for _, transport := range []string{"udp", "tcp"} {
			r := ts.query(t, transport, c.name, c.qtype, 0)
			if r.Rcode != c.rcode || len(r.Answer) != 0 || !r.Authoritative {
				t.Errorf("%s %s %s: %s with %d answers (aa %v), want %s and none",
					transport, c.name, dns.TypeToString[c.qtype], dns.RcodeToString[r.Rcode], len(r.Answer), r.Authoritative, dns.RcodeToString[c.rcode])
				continue
			}
			if len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA {
				t.Errorf("%s %s: authority %v, want the SOA", transport, c.name, r.Ns)
				continue
			}
			if soa := r.Ns[0].(*dns.SOA); soa.Serial != 42 || soa.Minttl != 5 || soa.Hdr.Ttl != 5 {
				t.Errorf("SOA %v: want serial 42, minimum and TTL 5", soa)
			}
		}
	}
	if r := ts.query(t, "udp", "clusterset.local.", dns.TypeSOA, 0); len(r.Answer) != 1 || r.Answer[0].(*dns.SOA).Serial != 42 {
		t.Errorf("apex SOA: %v", r.Answer)
	}
}

func TestNamesOutsideTheZoneAreRefused(t *testing.T) {
	ts := startServer(t, DefaultConfig(), sampleZone())
	for _, name := range []string{"example.com.", "cluster.local.", "local.", ".", "xclusterset.local."} {
		r := ts.query(t, "udp", name, dns.TypeA, 0)
		if r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
			t.Errorf("%s: %s, want REFUSED", name, dns.RcodeToString[r.Rcode])
		}
	}
	got := testutil.ToFloat64(ts.s.m.queries.WithLabelValues("udp", "REFUSED"))
	if got != 5 {
		t.Errorf("refused queries counted: %v, want 5", got)
	}
}

func TestLargeAnswersAreTruncatedOverUDPAndWholeOverTCP(t *testing.T) {
	big := headless(db, 60) // 120 endpoints: far beyond 512 and 1232 bytes
	ts := startServer(t, DefaultConfig(), NewZone(1, 0, []Service{big}))
	const name = "db.shop.svc.clusterset.local."

	r := ts.query(t, "udp", name, dns.TypeA, 0)
	if !r.Truncated || len(r.Answer) >= 120 {
		t.Fatalf("UDP without EDNS0: tc %v with %d answers, want truncated", r.Truncated, len(r.Answer))
	}
	r.Compress = true // as sent
	if n, err := r.Pack(); err != nil || len(n) > dns.MinMsgSize {
		t.Errorf("UDP without EDNS0: %d bytes (%v), want at most 512", len(n), err)
	}
	small := len(r.Answer)

	// EDNS0: the client's buffer is honoured up to MaxUDPSize.
	r = ts.query(t, "udp", name, dns.TypeA, 4096)
	if !r.Truncated || len(r.Answer) <= small {
		t.Fatalf("UDP with a 4096-byte buffer: tc %v with %d answers, want more than %d and still truncated at 1232", r.Truncated, len(r.Answer), small)
	}
	r.Compress = true
	if b, _ := r.Pack(); len(b) > DefaultMaxUDPSize {
		t.Errorf("UDP answer %d bytes, over MaxUDPSize %d", len(b), DefaultMaxUDPSize)
	}
	if opt := r.IsEdns0(); opt == nil || opt.UDPSize() != DefaultMaxUDPSize {
		t.Errorf("reply OPT %v, want our buffer size %d", opt, DefaultMaxUDPSize)
	}

	// TCP: the whole answer.
	r = ts.query(t, "tcp", name, dns.TypeA, 0)
	if r.Truncated || len(r.Answer) != 120 {
		t.Fatalf("TCP: tc %v with %d answers, want all 120", r.Truncated, len(r.Answer))
	}
	// A resolver that follows the TC bit (miekg's client does not by
	// itself): retrying over TCP gets everything.
	if got := testutil.ToFloat64(ts.s.m.truncated); got != 2 {
		t.Errorf("truncated answers counted: %v, want 2", got)
	}
}

func TestBeforeTheFirstZoneTheServerFailsRatherThanDenies(t *testing.T) {
	ts := startServer(t, DefaultConfig(), nil)
	r := ts.query(t, "udp", "reviews.default.svc.clusterset.local.", dns.TypeA, 0)
	if r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("before any zone: %s, want SERVFAIL (no negative answer to cache)", dns.RcodeToString[r.Rcode])
	}
	ts.s.SetZone(sampleZone())
	if r := ts.query(t, "udp", "reviews.default.svc.clusterset.local.", dns.TypeA, 0); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("after SetZone: %s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
	// A new zone replaces the old one for the next query.
	ts.s.SetZone(NewZone(43, 0, nil))
	if r := ts.query(t, "udp", "reviews.default.svc.clusterset.local.", dns.TypeA, 0); r.Rcode != dns.RcodeNameError {
		t.Fatalf("after the import went: %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
}

func TestUnsupportedEDNSVersionAndOpcodeAreRefusedPrecisely(t *testing.T) {
	ts := startServer(t, DefaultConfig(), sampleZone())
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion("reviews.default.svc.clusterset.local.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	r, _, err := c.Exchange(m, ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeBadVers {
		t.Errorf("EDNS version 1: %s, want BADVERS", dns.RcodeToString[r.Rcode])
	}
	m = new(dns.Msg)
	m.SetNotify("clusterset.local.")
	if r, _, err = c.Exchange(m, ts.addr); err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("NOTIFY: %s, want NOTIMP", dns.RcodeToString[r.Rcode])
	}
}

func TestQueriesOverTheRateBoundAreRefusedAndCounted(t *testing.T) {
	cfg := DefaultConfig()
	cfg.QPS, cfg.Burst = 0.001, 3 // three, then none for a long while
	ts := startServer(t, cfg, sampleZone())
	var rcodes []int
	for range 5 {
		rcodes = append(rcodes, ts.query(t, "udp", "reviews.default.svc.clusterset.local.", dns.TypeA, 0).Rcode)
	}
	want := []int{0, 0, 0, dns.RcodeRefused, dns.RcodeRefused}
	if !slices.Equal(rcodes, want) {
		t.Errorf("rcodes %v, want %v", rcodes, want)
	}
	if got := testutil.ToFloat64(ts.s.m.limited); got != 2 {
		t.Errorf("rate limited counted: %v, want 2", got)
	}
}

func TestTCPConnectionsBeyondTheBoundAreClosedAtOnce(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxTCPConns = 2
	ts := startServer(t, cfg, sampleZone())
	var held []*dns.Conn
	for range 2 {
		c, err := dns.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		held = append(held, c)
	}
	ask := func(c *dns.Conn) error {
		m := new(dns.Msg)
		m.SetQuestion("reviews.default.svc.clusterset.local.", dns.TypeA)
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if err := c.WriteMsg(m); err != nil {
			return err
		}
		_, err := c.ReadMsg()
		return err
	}
	for i, c := range held {
		if err := ask(c); err != nil {
			t.Fatalf("held connection %d: %v", i, err)
		}
	}
	third, err := dns.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = third.Close() }()
	if err := ask(third); err == nil {
		t.Fatal("a third connection was served with MaxTCPConns 2")
	}
	if got := testutil.ToFloat64(ts.s.m.tcpRefused); got != 1 {
		t.Errorf("refused connections counted: %v, want 1", got)
	}
	// Closing one makes room.
	_ = held[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := dns.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		err = ask(c)
		_ = c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection served after one closed: %v", err)
		}
	}
}

func TestConfigValidateNamesEachField(t *testing.T) {
	c := Config{TTL: 0, MaxUDPSize: 100, MaxTCPConns: 0, TCPIdleTimeout: 0, MaxTCPQueries: 0, QPS: -1}
	err := c.Validate()
	var fields []string
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			var fe *federation.FieldError
			if errors.As(e, &fe) {
				fields = append(fields, fe.Field)
			}
		}
	}
	want := []string{"dns.ttl", "dns.max_udp_size", "dns.max_tcp_conns", "dns.tcp_idle_timeout", "dns.max_tcp_queries", "dns.qps"}
	if !slices.Equal(fields, want) {
		t.Errorf("Validate() named %q, want %q (%v)", fields, want, err)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}
