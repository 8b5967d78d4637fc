package agent

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meshfed/meshfed/testenv"
)

// dnsQuery asks addr over transport and returns the reply.
func dnsQuery(ctx context.Context, transport, addr, name string, qtype uint16) (*dns.Msg, error) {
	c := &dns.Client{Net: transport, Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	r, _, err := c.ExchangeContext(ctx, m, addr)
	return r, err
}

// waitA waits until name resolves (over UDP and TCP) to exactly want.
func waitA(t *testing.T, addr, name string, want netip.Addr, timeout time.Duration) {
	t.Helper()
	err := testenv.WaitFor(context.Background(), timeout, func(ctx context.Context) error {
		for _, transport := range []string{"udp", "tcp"} {
			r, err := dnsQuery(ctx, transport, addr, name, dns.TypeA)
			if err != nil {
				return err
			}
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				return fmt.Errorf("%s: %s %v", transport, dns.RcodeToString[r.Rcode], r.Answer)
			}
			if got, _ := netip.AddrFromSlice(r.Answer[0].(*dns.A).A); got.Unmap() != want {
				return fmt.Errorf("%s: A %v, want %v", transport, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDNSAnswersImportsAndKeepsAnsweringFromTheCacheWithTheHubDown runs
// two file-source agents against a real hub: west's DNS server resolves
// east's export to its ClusterSetIP (from west's --clusterset-ips), with
// SRV for the named port and NXDOMAIN for a name that does not exist.
// Then every hub server is killed and west is restarted: it answers the
// same, from its cached view, with the same ClusterSetIP.
func TestDNSAnswersImportsAndKeepsAnsweringFromTheCacheWithTheHubDown(t *testing.T) {
	fed := testenv.Start(t, testenv.Options{HubServers: 1})
	admin := adminClient(t, fed)
	ctx := context.Background()

	eastCfg := fileConfig(t, "east", "us-east", "us-east-1a", t.TempDir())
	writeCatalog(t, eastCfg.SourcePath, reviewsCatalog)
	if err := Join(ctx, eastCfg, createToken(t, admin, "east")); err != nil {
		t.Fatal(err)
	}
	startAgent(t, eastCfg)

	westCfg := fileConfig(t, "west", "us-west", "us-west-1a", t.TempDir())
	westCfg.DNSAddr = "127.0.0.1:0"
	westCfg.ClusterSetIPs = netip.MustParsePrefix("127.77.0.0/24")
	writeCatalog(t, westCfg.SourcePath, "services: []\n")
	if err := Join(ctx, westCfg, createToken(t, admin, "west")); err != nil {
		t.Fatal(err)
	}
	west := startAgent(t, westCfg)
	waitState(t, west.a, 30*time.Second, hasImportFrom("default/reviews", "east"))
	dnsAddr := west.a.DNSAddr()
	const name = "reviews.default.svc.clusterset.local."
	ip := netip.MustParseAddr("127.77.0.1") // the first address of the prefix
	waitA(t, dnsAddr, name, ip, 10*time.Second)
	// The gateways are told to listen there.
	if err := testenv.WaitFor(ctx, 10*time.Second, func(context.Context) error {
		c, _ := west.a.gw.current()
		if im := c.imports["default/reviews"]; im.GetClusterSetIp() != ip.String() {
			return fmt.Errorf("gateway import %v, want cluster_set_ip %v", im, ip)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	check := func(when string) {
		t.Helper()
		r, err := dnsQuery(ctx, "udp", dnsAddr, "_http._tcp."+name, dns.TypeSRV)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Answer) != 1 || r.Answer[0].(*dns.SRV).Port != 8080 || r.Answer[0].(*dns.SRV).Target != name {
			t.Errorf("%s: SRV %v, want port 8080 at %s", when, r.Answer, name)
		}
		r, err = dnsQuery(ctx, "tcp", dnsAddr, "nope.default.svc.clusterset.local.", dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
			t.Errorf("%s: a missing name: %s, authority %v, want NXDOMAIN with the SOA", when, dns.RcodeToString[r.Rcode], r.Ns)
		}
	}
	check("hub up")

	for _, s := range fed.Hub().Servers() {
		if err := s.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	waitState(t, west.a, 30*time.Second, func(st State) error {
		if st.Hub.Connected {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	waitA(t, dnsAddr, name, ip, 5*time.Second)
	check("hub down")

	// A restart with the hub still down serves the cached view, on a new
	// port, with the ClusterSetIP kept in the data directory.
	west.stop(t)
	west = startAgent(t, westCfg)
	waitState(t, west.a, 30*time.Second, func(st State) error {
		if !st.Hub.FromCache {
			return fmt.Errorf("hub state %+v, want the cache", st.Hub)
		}
		return nil
	})
	dnsAddr = west.a.DNSAddr()
	waitA(t, dnsAddr, name, ip, 10*time.Second)
	check("restarted with the hub down")
}
