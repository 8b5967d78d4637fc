package eastwest

import (
	"testing"
	"testing/synctest"
	"time"
)

// Outlier ejection grows with repeated ejections and decays with
// successes, and forgive ends it at once. Driven through many periods on
// the fake clock.
func TestOutlierEjectionGrowsDecaysAndIsForgiven(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := newOutliers[string](3, 10*time.Second, 300*time.Second, nil)
		fail := func(n int) bool {
			ejected := false
			for range n {
				ejected = o.failure("c", time.Now()) || ejected
			}
			return ejected
		}
		ejectedFor := func() time.Duration {
			start := time.Now()
			for o.ejected("c", time.Now()) {
				time.Sleep(time.Second)
			}
			return time.Since(start)
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
			o.success("c")
		}
		fail(3)
		if got := ejectedFor(); got != 20*time.Second {
			t.Fatalf("after 39 successes: ejected for %v, want 20s (multiplier 2)", got)
		}
		// Failures below the threshold, interleaved with a success, eject nothing.
		for range 100 {
			fail(2)
			o.success("c")
		}
		if o.ejected("c", time.Now()) {
			t.Fatal("ejected without three failures in a row")
		}
		// forgive ends an ejection at once and resets the multiplier.
		fail(3)
		if !o.ejected("c", time.Now()) {
			t.Fatal("not ejected")
		}
		o.forgive("c")
		if o.ejected("c", time.Now()) {
			t.Fatal("still ejected after forgive")
		}
		fail(3)
		if got := ejectedFor(); got != 10*time.Second {
			t.Fatalf("after forgive: ejected for %v, want the base 10s", got)
		}
	})
}
