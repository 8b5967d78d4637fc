package trust

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/federation"
)

func TestIdentityBuilders(t *testing.T) {
	west := td(t, "west.meshfed.local")
	id, err := WorkloadID(west, "shop", "web.frontend")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := id.String(), "spiffe://west.meshfed.local/ns/shop/sa/web.frontend"; got != want {
		t.Errorf("WorkloadID = %s, want %s", got, want)
	}
	if got, want := GatewayID(west).String(), "spiffe://west.meshfed.local/meshfed/gateway"; got != want {
		t.Errorf("GatewayID = %s, want %s", got, want)
	}
	if got, want := AgentID(west).String(), "spiffe://west.meshfed.local/meshfed/agent"; got != want {
		t.Errorf("AgentID = %s, want %s", got, want)
	}
	if !GatewayID(spiffeid.TrustDomain{}).IsZero() || !AgentID(spiffeid.TrustDomain{}).IsZero() {
		t.Error("GatewayID/AgentID of the zero trust domain must be the zero ID")
	}
	for _, c := range []struct{ ns, sa string }{
		{"", "web"}, {"Shop", "web"}, {"shop", ""}, {"-shop", "web"}, {"shop", "web..x"},
		{strings.Repeat("a", 64), "web"}, {"shop", strings.Repeat("a", 254)}, {"shop", "we_b"},
	} {
		if _, err := WorkloadID(west, c.ns, c.sa); !errors.Is(err, ErrInvalidID) {
			t.Errorf("WorkloadID(%q, %q) = %v, want ErrInvalidID", c.ns, c.sa, err)
		}
	}
	if _, err := WorkloadID(spiffeid.TrustDomain{}, "a", "b"); !errors.Is(err, ErrInvalidID) {
		t.Errorf("WorkloadID with zero trust domain: %v, want ErrInvalidID", err)
	}
}

func TestParseIdentity(t *testing.T) {
	for _, c := range []struct {
		in       string
		kind     Kind
		ns, sa   string
		td       string
		wantFail bool
	}{
		{in: "spiffe://west.meshfed.local/ns/shop/sa/web", kind: KindWorkload, ns: "shop", sa: "web", td: "west.meshfed.local"},
		{in: "spiffe://a.test/ns/a/sa/b.c-d", kind: KindWorkload, ns: "a", sa: "b.c-d", td: "a.test"},
		{in: "spiffe://a.test/meshfed/gateway", kind: KindGateway, td: "a.test"},
		{in: "spiffe://a.test/meshfed/agent", kind: KindAgent, td: "a.test"},
		{in: "spiffe://a.test", wantFail: true},
		{in: "spiffe://a.test/", wantFail: true},
		{in: "spiffe://a.test/meshfed", wantFail: true},
		{in: "spiffe://a.test/meshfed/gateway/1", wantFail: true},
		{in: "spiffe://a.test/meshfed/other", wantFail: true},
		{in: "spiffe://a.test/ns/shop/sa", wantFail: true},
		{in: "spiffe://a.test/ns/shop/sa/web/extra", wantFail: true},
		{in: "spiffe://a.test/ns/Shop/sa/web", wantFail: true},
		{in: "spiffe://a.test/ns/shop/svc/web", wantFail: true},
		{in: "spiffe://a.test/ns/shop/sa/web_x", wantFail: true},
		{in: "https://a.test/ns/shop/sa/web", wantFail: true},
		{in: "spiffe://A.test/meshfed/agent", wantFail: true},
		{in: "", wantFail: true},
		{in: "spiffe://a.test/ns/" + strings.Repeat("x", 3000) + "/sa/web", wantFail: true},
	} {
		got, err := ParseIdentity(c.in)
		if c.wantFail {
			if !errors.Is(err, ErrInvalidID) {
				t.Errorf("ParseIdentity(%.40q) = %v, %v; want ErrInvalidID", c.in, got, err)
			}
			var ie *IDError
			if err != nil && !errors.As(err, &ie) {
				t.Errorf("ParseIdentity(%.40q): error %T is not an *IDError", c.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseIdentity(%q): %v", c.in, err)
			continue
		}
		if got.Kind() != c.kind || got.Namespace() != c.ns || got.ServiceAccount() != c.sa || got.TrustDomain().Name() != c.td || got.String() != c.in {
			t.Errorf("ParseIdentity(%q) = kind %v ns %q sa %q td %q", c.in, got.Kind(), got.Namespace(), got.ServiceAccount(), got.TrustDomain())
		}
	}
}

func TestClassifyRoundTrip(t *testing.T) {
	a := td(t, "a.test")
	w, err := WorkloadID(a, "ns1", "sa1")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []spiffeid.ID{w, GatewayID(a), AgentID(a)} {
		i, err := Classify(id)
		if err != nil {
			t.Fatalf("Classify(%s): %v", id, err)
		}
		if i.ID() != id {
			t.Errorf("Classify(%s).ID() = %s", id, i.ID())
		}
	}
	if _, err := Classify(spiffeid.ID{}); !errors.Is(err, ErrInvalidID) {
		t.Errorf("Classify(zero) = %v", err)
	}
	if (Identity{}).IsZero() != true {
		t.Error("zero Identity is not IsZero")
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindWorkload: "workload", KindGateway: "gateway", KindAgent: "agent", 9: "kind(9)"} {
		if k.String() != want {
			t.Errorf("Kind(%d).String() = %q, want %q", k, k.String(), want)
		}
	}
}

func TestTrustDomainDefaults(t *testing.T) {
	west := federation.MustClusterName("west")
	if got := DefaultTrustDomain(west).Name(); got != "west.meshfed.local" {
		t.Errorf("DefaultTrustDomain(west) = %q", got)
	}
	got, err := ClusterTrustDomain(west, federation.TrustDomain{})
	if err != nil || got.Name() != "west.meshfed.local" {
		t.Errorf("ClusterTrustDomain(west, zero) = %v, %v", got, err)
	}
	prod, err := federation.ParseTrustDomain("prod.example.org")
	if err != nil {
		t.Fatal(err)
	}
	got, err = ClusterTrustDomain(west, prod)
	if err != nil || got.Name() != "prod.example.org" {
		t.Errorf("ClusterTrustDomain(west, prod) = %v, %v", got, err)
	}
	if _, err := ClusterTrustDomain(federation.ClusterName{}, federation.TrustDomain{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("ClusterTrustDomain(zero, zero) = %v, want ErrInvalidConfig", err)
	}
}
