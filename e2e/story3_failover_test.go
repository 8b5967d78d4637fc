package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/meshfed/meshfed/testenv"
)

// loadRate is the steady load of the failover stories, in requests a
// second: enough to see every fault within milliseconds, little enough for
// the 2-core machine that runs every process.
const loadRate = 100

// settleWindow is how many consecutive requests, the latest ones, must be
// answered as a phase wants before the next fault.
const settleWindow = 50

// settled waits until the latest settleWindow requests sent since since
// all succeeded, answered by the clusters of want and by each of them. A
// gateway that comes back gets traffic again once the callers' outlier
// detection lets it (10 s for each time it was ejected; 20 s after this
// suite's second fault on west's), hence the long bound.
func settled(t testing.TB, load *testenv.Load, what string, since time.Time, want ...string) {
	t.Helper()
	if err := testenv.WaitFor(context.Background(), 90*time.Second, func(context.Context) error {
		r := load.Since(since)
		if len(r.Outcomes) < settleWindow {
			return fmt.Errorf("%d requests answered so far", len(r.Outcomes))
		}
		last := &testenv.Result{Outcomes: r.Outcomes[len(r.Outcomes)-settleWindow:]}
		by := last.ByCluster()
		if f := last.Failed(); len(f) > 0 {
			return fmt.Errorf("%d of the last %d failed; first: %v", len(f), settleWindow, f[0].Err)
		}
		got := slices.Sorted(maps.Keys(by))
		if !slices.Equal(got, want) {
			return fmt.Errorf("the last %d answered by %v, want %v", settleWindow, by, want)
		}
		return nil
	}); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// phase is the requests of a window of a load, by when they were sent.
type phase struct {
	name     string
	from, to time.Time // [from, to); to zero: open
	// back is the cluster a recovery brings back: the phase reports when
	// it answered again.
	back string
}

func (p phase) of(all []testenv.Outcome) *testenv.Result {
	r := &testenv.Result{}
	for _, o := range all {
		if !o.Start.Before(p.from) && (p.to.IsZero() || o.Start.Before(p.to)) {
			r.Outcomes = append(r.Outcomes, o)
			r.Elapsed = o.Start.Add(o.Latency).Sub(p.from)
		}
	}
	return r
}

// backAfter is how long after the phase began its back cluster first
// answered, or -1.
func (p phase) backAfter(all []testenv.Outcome) time.Duration {
	for _, o := range p.of(all).Outcomes {
		if o.OK() && o.Cluster == p.back {
			return o.Start.Sub(p.from)
		}
	}
	return -1
}

// TestCrossClusterFailoverUnderLoad is story 3. Under a steady load from
// central on reviews, which east and west export: east's reviews
// workloads are killed (echo servers gone, endpoints not ready) and come
// back; west's gateway is SIGKILLed and restarted; then west's gateway is
// blackholed (its WAN link drops every packet) and healed. No request fails
// through the kills and restarts, each fault moves the traffic to the
// cluster left, and the time the blackhole takes to move it is reported.
func TestCrossClusterFailoverUnderLoad(t *testing.T) {
	fed := traffic.get(t)
	baseline(t, fed, "east", "west")
	east, west, central := fed.Cluster("east"), fed.Cluster("west"), fed.Cluster("central")
	reviews := east.Workload("default/reviews")
	// Whatever fails midway, the shared federation is left healthy.
	t.Cleanup(func() {
		fed.GatewayLink("west").Heal()
		if !west.Gateway().Running() {
			if err := west.Gateway().Start(); err != nil {
				t.Error(err)
			}
		}
		if err := reviews.Recover(); err != nil {
			t.Error(err)
		}
	})

	load := central.StartLoad("default/reviews", loadRate)
	t.Cleanup(func() { load.Stop() })
	var phases []phase
	begin := func(name, back string) time.Time {
		now := time.Now()
		if n := len(phases); n > 0 {
			phases[n-1].to = now
		}
		phases = append(phases, phase{name: name, from: now, back: back})
		return now
	}

	settled(t, load, "baseline", begin("baseline", ""), "east", "west")

	at := begin("east's reviews workloads killed", "")
	if err := reviews.Fail(); err != nil {
		t.Fatal(err)
	}
	settled(t, load, "east's workloads killed", at, "west")
	at = begin("east's reviews workloads back", "east")
	if err := reviews.Recover(); err != nil {
		t.Fatal(err)
	}
	settled(t, load, "east's workloads back", at, "east", "west")

	at = begin("west's gateway killed", "")
	if err := west.Gateway().Kill(); err != nil {
		t.Fatal(err)
	}
	settled(t, load, "west's gateway killed", at, "east")
	at = begin("west's gateway restarted", "west")
	if err := west.Gateway().Start(); err != nil {
		t.Fatal(err)
	}
	settled(t, load, "west's gateway restarted", at, "east", "west")

	cut := begin("west's gateway blackholed", "")
	fed.GatewayLink("west").Partition()
	settled(t, load, "west's gateway blackholed", cut, "east")
	healed := begin("west's gateway healed", "west")
	fed.GatewayLink("west").Heal()
	settled(t, load, "west's gateway healed", healed, "east", "west")
	all := load.Stop().Outcomes

	for _, p := range phases {
		r := p.of(all)
		back := ""
		if p.back != "" {
			back = fmt.Sprintf("; %s answered again after %v", p.back, p.backAfter(all).Round(time.Millisecond))
		}
		t.Logf("%-34s %v, max %v%s", p.name+":", r, maxLatency(r).Round(time.Millisecond), back)
	}
	// The kills: no request fails, from the first to the last sent before
	// the blackhole and answered before it, and after the healing.
	for _, o := range all {
		if o.OK() {
			continue
		}
		if end := o.Start.Add(o.Latency); end.Before(cut) || !o.Start.Before(healed) {
			t.Errorf("request %d sent %v after the load began failed: %v", o.Seq, o.Start.Sub(phases[0].from).Round(time.Millisecond), o.Err)
		}
	}

	// The blackhole: the shift is over with the last request, sent after
	// the cut, that failed or was held up (it went to west first); later
	// ones all went to east at once.
	shift, failed := blackholeShift(all, phases[0], cut, healed)
	t.Logf("blackhole: traffic off west %v after the cut (%d requests failed meanwhile)", shift.Round(time.Millisecond), failed)
}

// blackholeShift measures a blackhole's shift: from the cut, how long
// requests kept failing or being held up, and how many failed. Held up is
// 10 times the baseline's 99th percentile latency, and at least 250 ms.
func blackholeShift(all []testenv.Outcome, base phase, cut, healed time.Time) (time.Duration, int) {
	slow := max(250*time.Millisecond, 10*base.of(all).Percentile(99))
	var shift time.Duration
	failed := 0
	for _, o := range all {
		if o.Start.Add(o.Latency).Before(cut) || !o.Start.Before(healed) {
			continue
		}
		if !o.OK() {
			failed++
		}
		if !o.OK() || o.Latency > slow {
			shift = max(shift, o.Start.Add(o.Latency).Sub(cut))
		}
	}
	return shift, failed
}

func maxLatency(r *testenv.Result) time.Duration {
	var m time.Duration
	for _, o := range r.Outcomes {
		m = max(m, o.Latency)
	}
	return m
}
