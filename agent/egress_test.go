package agent

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshfed/meshfed/federation"
)

func TestFreedEgressPortIsHeldBackBeforeReuse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab := newEgressTable(15000, 15001, nil)
		a, b, c := federation.MustServiceKey("default/a"), federation.MustServiceKey("default/b"), federation.MustServiceKey("default/c")
		pa, _ := tab.allocate(a, "http")
		pb, _ := tab.allocate(b, "http")
		if pa != 15000 || pb != 15001 {
			t.Fatalf("ports %d %d", pa, pb)
		}
		tab.retain(map[federation.ServiceKey]bool{b: true}) // a goes away
		if _, err := tab.allocate(c, "http"); err == nil {
			t.Fatal("a port freed a moment ago went to another import")
		}
		time.Sleep(DefaultEgressPortHold - time.Second) // synctest: fake time passes
		if _, err := tab.allocate(c, "http"); err == nil {
			t.Fatal("a port was reused before its hold ended")
		}
		time.Sleep(time.Second)
		if p, err := tab.allocate(c, "http"); err != nil || p != pa {
			t.Fatalf("after the hold: %d, %v; want %d", p, err, pa)
		}
		// Across many hold periods the assignment of a live import never moves.
		for range 10 {
			time.Sleep(DefaultEgressPortHold)
			if p, _ := tab.allocate(b, "http"); p != pb {
				t.Fatalf("b moved from %d to %d", pb, p)
			}
		}
	})
}

func TestEgressTableRoundTripsItsOneEncoding(t *testing.T) {
	tab := newEgressTable(15000, 15010, nil)
	for _, k := range []egressKey{{federation.MustServiceKey("default/reviews"), "http"}, {federation.MustServiceKey("default/reviews"), "grpc"}, {federation.MustServiceKey("shop/cart"), "tcp"}} {
		if _, err := tab.allocate(k.service, k.port); err != nil {
			t.Fatal(err)
		}
	}
	b, err := encodeEgress(tab.snapshot())
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeEgress(b)
	if err != nil {
		t.Fatal(err)
	}
	again := newEgressTable(15000, 15010, nil)
	again.seed(m)
	for k, p := range tab.snapshot() {
		if got, _ := again.allocate(k.service, k.port); got != p {
			t.Errorf("%s: %d after a restart, was %d", k, got, p)
		}
	}
	if _, err := decodeEgress([]byte(`{"no-slash": 15000}`)); err == nil {
		t.Error("a key without namespace/name/port decoded")
	}
}
