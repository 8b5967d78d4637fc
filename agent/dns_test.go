package agent

import (
	"net/netip"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

func plansOf(keys ...string) map[string]*importPlan {
	out := map[string]*importPlan{}
	for _, k := range keys {
		svc := federation.MustServiceKey(k)
		out[k] = &importPlan{Key: k, Namespace: svc.Namespace(), Name: svc.Name(),
			Ports: []*fedv1.ServicePort{{Name: "http", Port: 8080, Protocol: "HTTP"}, {Name: "dns", Port: 53, Protocol: "UDP"}}}
	}
	return out
}

func TestClusterSetIPsAreThePrefixsAddressesFromTheSecondToTheLastButOne(t *testing.T) {
	tab := newClusterSetIPTable(netip.MustParsePrefix("127.1.2.0/30"), nil)
	if _, err := tab.allocate(plansOf("a/x", "a/y")); err != nil {
		t.Fatal(err)
	}
	ips := tab.clusterSetIPs()
	if got := ips[federation.MustServiceKey("a/x")]; len(got) != 1 || got[0] != netip.MustParseAddr("127.1.2.1") {
		t.Errorf("a/x: %v, want 127.1.2.1", got)
	}
	if got := ips[federation.MustServiceKey("a/y")]; len(got) != 1 || got[0] != netip.MustParseAddr("127.1.2.2") {
		t.Errorf("a/y: %v, want 127.1.2.2", got)
	}
	// A /30 has two: the third import gets none, and an error says why.
	if _, err := tab.allocate(plansOf("a/x", "a/y", "a/z")); err == nil {
		t.Error("a third import in a /30 got an address")
	}
	v6 := newClusterSetIPTable(netip.MustParsePrefix("fd00::ff:0/112"), nil)
	if _, err := v6.allocate(plansOf("a/x")); err != nil {
		t.Fatal(err)
	}
	if got := v6.clusterSetIPs()[federation.MustServiceKey("a/x")]; got[0] != netip.MustParseAddr("fd00::ff:1") {
		t.Errorf("IPv6: %v, want fd00::ff:1", got)
	}
}

func TestAFreedClusterSetIPIsHeldBackBeforeAnotherImportGetsIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab := newClusterSetIPTable(netip.MustParsePrefix("127.1.2.0/29"), nil)
		x, y := federation.MustServiceKey("a/x"), federation.MustServiceKey("a/y")
		if _, err := tab.allocate(plansOf("a/x")); err != nil {
			t.Fatal(err)
		}
		first := tab.clusterSetIPs()[x][0]
		if _, err := tab.allocate(plansOf("a/y")); err != nil { // a/x went
			t.Fatal(err)
		}
		if got := tab.clusterSetIPs()[y][0]; got == first {
			t.Fatalf("a/y got a/x's address %v at once", got)
		}
		time.Sleep(DefaultEgressPortHold + time.Second) // fake time: the hold ends
		if _, err := tab.allocate(plansOf("a/y", "a/z")); err != nil {
			t.Fatal(err)
		}
		if got := tab.clusterSetIPs()[federation.MustServiceKey("a/z")][0]; got != first {
			t.Errorf("after the hold a/z got %v, want the lowest free %v", got, first)
		}
	})
}

func TestClusterSetIPsSurviveARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), clusterSetIPsFileName)
	prefix := netip.MustParsePrefix("127.1.2.0/24")
	tab := newClusterSetIPTable(prefix, nil)
	if err := tab.load(path); err != nil {
		t.Fatal(err)
	}
	if err := tab.update(plansOf("a/x", "a/y", "a/z")); err != nil {
		t.Fatal(err)
	}
	if err := tab.update(plansOf("a/y", "a/z")); err != nil {
		t.Fatal(err)
	}
	want := tab.clusterSetIPs()
	again := newClusterSetIPTable(prefix, nil)
	if err := again.load(path); err != nil {
		t.Fatal(err)
	}
	got := again.clusterSetIPs()
	if len(got) != 2 {
		t.Fatalf("after a restart: %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k][0] != v[0] {
			t.Errorf("%s: %v after a restart, %v before", k, got[k], v)
		}
	}
}

func TestDNSServicesCarryPortsWithTheirKubernetesProtocolAndTheIPs(t *testing.T) {
	x := federation.MustServiceKey("a/x")
	ips := map[federation.ServiceKey][]netip.Addr{x: {netip.MustParseAddr("10.0.0.1")}}
	got := dnsServices(plansOf("a/x", "a/y"), ips)
	if len(got) != 2 || got[0].Key != x || len(got[0].IPs) != 1 || len(got[1].IPs) != 0 {
		t.Fatalf("services %+v", got)
	}
	if p := got[0].Ports; len(p) != 2 || p[0].Protocol != "TCP" || p[0].Port != 8080 || p[1].Protocol != "UDP" || p[1].Name != "dns" {
		t.Errorf("ports %+v, want http 8080/TCP (HTTP is TCP) and dns 53/UDP", p)
	}
}

// A headless import's names are its ready endpoints' addresses, from every
// exporting cluster but one whose ports conflict; it has no ClusterSetIP
// even if one is known for its key.
func TestDNSServicesOfAHeadlessImportAreItsReadyEndpoints(t *testing.T) {
	plans := plansOf("db/pg")
	p := plans["db/pg"]
	p.Headless = true
	p.Clusters = []importCluster{
		{Cluster: "east", Endpoints: []*fedv1.HeadlessEndpoint{
			{Hostname: "pg-0", Addresses: []string{"10.1.0.5", "fd00::5"}, Ready: true},
			{Hostname: "pg-1", Addresses: []string{"10.1.0.6"}, Ready: false},
		}},
		{Cluster: "west", Endpoints: []*fedv1.HeadlessEndpoint{{Hostname: "pg-0", Addresses: []string{"10.2.0.7"}, Ready: true}}},
		{Cluster: "north", Conflict: "ports", ConflictReason: "PortConflict", portClash: true,
			Endpoints: []*fedv1.HeadlessEndpoint{{Hostname: "pg-0", Addresses: []string{"10.3.0.8"}, Ready: true}}},
	}
	ips := map[federation.ServiceKey][]netip.Addr{federation.MustServiceKey("db/pg"): {netip.MustParseAddr("10.0.0.1")}}
	got := dnsServices(plans, ips)
	if len(got) != 1 || !got[0].Headless || len(got[0].IPs) != 0 {
		t.Fatalf("services %+v, want one headless without IPs", got)
	}
	eps := got[0].Endpoints
	if len(eps) != 2 {
		t.Fatalf("endpoints %+v, want east's pg-0 and west's pg-0 (not the unready pg-1, not north's with a port conflict)", eps)
	}
	if eps[0].Cluster.String() != "east" || eps[0].Hostname != "pg-0" || len(eps[0].Addrs) != 2 || eps[1].Cluster.String() != "west" {
		t.Errorf("endpoints %+v", eps)
	}
}
