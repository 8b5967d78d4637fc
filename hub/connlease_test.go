package hub

import (
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeLeaseStore records a leaseWriter's writes on the fake clock.
type fakeLeaseStore struct {
	mu     sync.Mutex
	stored []string
	fail   bool
	writes []leaseWrite
	tries  []time.Time
}

type leaseWrite struct {
	at       time.Time
	clusters []string
}

func (f *fakeLeaseStore) writer(conns *connTracker, lease time.Duration) *leaseWriter {
	return &leaseWriter{
		lease: lease, conns: conns, log: slog.New(slog.DiscardHandler),
		stored: func() []string {
			f.mu.Lock()
			defer f.mu.Unlock()
			return slices.Clone(f.stored)
		},
		renew: func(now time.Time, clusters []string) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.tries = append(f.tries, now)
			if f.fail {
				return errors.New("no leader")
			}
			f.writes = append(f.writes, leaseWrite{now, slices.Clone(clusters)})
			f.stored = slices.Clone(clusters)
			return nil
		},
	}
}

func (f *fakeLeaseStore) take() []leaseWrite {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.writes
	f.writes, f.tries = nil, nil
	return w
}

// A server renews all its leases in one write every lease/3 while it holds
// streams, writes at once when the set changes, and writes nothing while
// it holds none; a failed write is retried within lease/3. Driven through
// many lease periods on the fake clock.
func TestLeaseWriterRenewsEveryThirdOfTheLeaseAndAtOnceOnChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lease = 3 * time.Second
		conns := newConnTracker()
		f := &fakeLeaseStore{stored: []string{"stale"}} // a lease from before a restart
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { f.writer(conns, lease).run(stop); close(done) }()
		synctest.Wait()
		if w := f.take(); len(w) != 1 || len(w[0].clusters) != 0 {
			t.Fatalf("at start with a stale lease stored: writes %v, want one releasing it", w)
		}
		time.Sleep(100 * lease)
		synctest.Wait()
		if w := f.take(); len(w) != 0 {
			t.Fatalf("holding no streams: %d writes in 100 leases, want none", len(w))
		}

		start := time.Now()
		releaseEast := conns.hold("east")
		releaseEast2 := conns.hold("east") // a second stream of the same cluster
		synctest.Wait()
		if w := f.take(); len(w) != 1 || !slices.Equal(w[0].clusters, []string{"east"}) || !w[0].at.Equal(start) {
			t.Fatalf("after east connected: writes %v, want [east] at once", w)
		}
		time.Sleep(30 * lease)
		synctest.Wait()
		w := f.take()
		if len(w) != 90 {
			t.Fatalf("%d renewals in 30 leases, want 90 (every lease/3)", len(w))
		}
		for i, x := range w {
			if want := start.Add(time.Duration(i+1) * lease / 3); !x.at.Equal(want) || !slices.Equal(x.clusters, []string{"east"}) {
				t.Fatalf("renewal %d: %v at %v, want [east] at %v", i, x.clusters, x.at.Sub(start), want.Sub(start))
			}
		}

		releaseWest := conns.hold("west")
		synctest.Wait()
		if w := f.take(); len(w) != 1 || !slices.Equal(w[0].clusters, []string{"east", "west"}) {
			t.Fatalf("after west connected: writes %v, want one [east west]", w)
		}
		releaseEast()
		synctest.Wait()
		if w := f.take(); len(w) != 0 {
			t.Fatalf("one of east's two streams closed: writes %v, want none", w)
		}
		releaseEast2()
		releaseEast2() // idempotent
		releaseWest()
		synctest.Wait()
		if w := f.take(); len(w) == 0 || len(w[len(w)-1].clusters) != 0 {
			t.Fatalf("after every stream closed: writes %v, want the last to release all", w)
		}
		time.Sleep(100 * lease)
		synctest.Wait()
		if w := f.take(); len(w) != 0 {
			t.Fatalf("idle again: %d writes, want none", len(w))
		}

		// No leader: retried with backoff, never more than lease/3 apart.
		f.mu.Lock()
		f.fail = true
		f.mu.Unlock()
		failStart := time.Now()
		release := conns.hold("east")
		time.Sleep(10 * lease)
		synctest.Wait()
		f.mu.Lock()
		tries := slices.Clone(f.tries)
		f.fail = false
		f.mu.Unlock()
		prev := failStart
		for i, at := range tries {
			if gap := at.Sub(prev); gap > lease/3 {
				t.Fatalf("retry %d came %v after the previous, more than lease/3", i, gap)
			}
			prev = at
		}
		time.Sleep(lease / 3)
		synctest.Wait()
		if w := f.take(); len(w) == 0 || !slices.Equal(w[0].clusters, []string{"east"}) {
			t.Fatalf("after the leader came back: writes %v, want [east]", w)
		}
		release()
		close(stop)
		<-done
	})
}
