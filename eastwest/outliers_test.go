package eastwest

import (
	"testing"
	"time"
)

// Outlier ejection grows with repeated ejections and decays with
// successes, and forgive ends it at once. The clock is the test's: every
// call takes the time it happens at, through many periods.
func TestOutlierEjectionGrowsDecaysAndIsForgiven(t *testing.T) {
	o := newOutliers[string](3, 10*time.Second, 300*time.Second, nil)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fail := func(n int) bool {
		ejected := false
		for range n {
			ejected = o.failure("c", now) || ejected
		}
		return ejected
	}
	// ejectedFor is how long the ejection that starts now lasts, to the
	// second; the clock moves to its end.
	ejectedFor := func() time.Duration {
		start := now
		for o.ejected("c", now) {
			now = now.Add(time.Second)
		}
		return now.Sub(start)
	}
	// Each ejection in a row lasts one base period longer, up to the max.
	for i := 1; i <= 40; i++ {
		if !fail(3) {
			t.Fatalf("round %d: three failures did not eject", i)
		}
		want := min(time.Duration(i)*10*time.Second, 300*time.Second)
		if got := ejectedFor(); got != want {
			t.Fatalf("round %d: ejected for %v, want %v", i, got, want)
		}
	}
	// Successes after the ejection earn the multiplier back, one step each.
	for range 39 {
		o.success("c", now)
	}
	fail(3)
	if got := ejectedFor(); got != 20*time.Second {
		t.Fatalf("after 39 successes: ejected for %v, want 20s (multiplier 2)", got)
	}
	// A success during an ejection earns nothing back.
	fail(3)
	o.success("c", now)
	if got := ejectedFor(); got != 30*time.Second {
		t.Fatalf("with a success during the ejection: ejected for %v, want 30s", got)
	}
	// Failures below the threshold, interleaved with a success, eject nothing.
	for range 100 {
		fail(2)
		o.success("c", now)
	}
	if o.ejected("c", now) {
		t.Fatal("ejected without three failures in a row")
	}
	// forgive ends an ejection at once and resets the multiplier.
	fail(3)
	if !o.ejected("c", now) {
		t.Fatal("not ejected")
	}
	o.forgive("c")
	if o.ejected("c", now) {
		t.Fatal("still ejected after forgive")
	}
	fail(3)
	if got := ejectedFor(); got != 10*time.Second {
		t.Fatalf("after forgive: ejected for %v, want the base 10s", got)
	}
}
