package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// Benchmarks for `make bench`. Each runs a fixed workload once
// (-benchtime 1x) and reports its own figures; ratios against the fsync
// baseline measured in the same run are what to compare across machines.

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// fsyncLatency measures a 4 KiB write + fsync in dir, as a Raft append does.
func fsyncLatency(b *testing.B, dir string, n int) (p50, p99 time.Duration) {
	f, err := os.Create(filepath.Join(dir, "fsync-probe"))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	buf := make([]byte, 4096)
	var lat []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	return percentile(lat, 0.5), percentile(lat, 0.99)
}

// productionTimings restores DefaultConfig's Raft timings in a test hub.
func productionTimings(c *Config) {
	d := DefaultConfig()
	c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = d.HeartbeatTimeout, d.ElectionTimeout, d.LeaderLeaseTimeout
}

func BenchmarkCommittedWrites(b *testing.B) {
	committedWrites(b, false, false)
}

// BenchmarkCommittedWritesRecorded is BenchmarkCommittedWrites on the paths
// whose writes the FSM records as requests (hub/request.go): named by the
// client (metadata meshfed-request-id, a fresh ID per write) and sent to
// the leader, or unnamed and sent to a follower, which forwards them.
func BenchmarkCommittedWritesRecorded(b *testing.B) {
	b.Run("named", func(b *testing.B) { committedWrites(b, true, false) })
	b.Run("forwarded", func(b *testing.B) { committedWrites(b, false, true) })
}

// committedWrites measures PutPolicy calls by 1, 16 and 256 writers against
// a three-server hub: on the leader, or on a follower (forwarded), with a
// client request ID per call or none (named).
func committedWrites(b *testing.B, named, forwarded bool) {
	h := newTestHub(b, 3, productionTimings)
	leader := h.Leader(10 * time.Second)
	target := leader
	if forwarded {
		target = (leader + 1) % 3
	}
	admin := h.Admin(target)
	p50, p99 := fsyncLatency(b, b.TempDir(), 200)
	fmt.Printf("\nfsync (4 KiB write + fsync, same disk): p50 %v  p99 %v\n", p50, p99)
	fmt.Printf("%-8s %12s %12s %12s %14s\n", "writers", "writes/s", "p50", "p99", "p50/fsync-p50")
	for _, writers := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			perWriter := max(2000/writers, 20)
			var mu sync.Mutex
			var lat []time.Duration
			var failed atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					mine := make([]time.Duration, 0, perWriter)
					for i := 0; i < perWriter; i++ {
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						if named {
							// The literal key and a local ID, so that this file
							// also builds on a tree without internal/requestid,
							// for A/B runs against it.
							var id [16]byte
							_, _ = rand.Read(id[:])
							ctx = metadata.AppendToOutgoingContext(ctx, "meshfed-request-id", hex.EncodeToString(id[:]))
						}
						t0 := time.Now()
						_, err := admin.PutPolicy(ctx, &fedv1.PutPolicyRequest{Policy: testPolicy(fmt.Sprintf("p%d", w), fmt.Sprintf("r%d", i))})
						cancel()
						if err != nil {
							failed.Add(1)
							continue
						}
						mine = append(mine, time.Since(t0))
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			if failed.Load() > 0 {
				b.Fatalf("%d writes failed", failed.Load())
			}
			rate := float64(len(lat)) / elapsed.Seconds()
			b.ReportMetric(rate, "writes/s")
			b.ReportMetric(float64(percentile(lat, 0.5).Microseconds()), "p50-µs")
			b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-µs")
			fmt.Printf("%-8d %12.0f %12v %12v %14.2f\n", writers, rate, percentile(lat, 0.5).Round(time.Microsecond),
				percentile(lat, 0.99).Round(time.Microsecond), float64(percentile(lat, 0.5))/float64(p50))
		})
	}
}

func BenchmarkSyncFanout(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			// Production Raft timings: with a thousand streams on two cores
			// the tests' 300 ms election timeout would be a load test of
			// elections, not of fan-out.
			// Joins from one address are rate-limited (JoinRate): lifted
			// here, where they set the stage and are not measured.
			h := newTestHub(b, 3, func(c *Config) {
				productionTimings(c)
				c.JoinRate, c.JoinBurst = 1e4, 1e4
			})
			admin := h.Admin()
			// n real agents: each joins with its own token and opens one
			// Sync stream, spread over the three servers by the client.
			agents := make([]*testAgent, n)
			var wg sync.WaitGroup
			sem := make(chan struct{}, 16)
			for i := range agents {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					agents[i] = joinCluster(b, admin, fmt.Sprintf("c%04d", i))
				}()
			}
			wg.Wait()
			if b.Failed() { // a join failed (Fatal on its goroutine ended only that one)
				b.FailNow()
			}
			streams := make([]*syncStream, n)
			for i, a := range agents {
				st, err := a.sync(0, "")
				if err != nil {
					b.Fatal(err)
				}
				streams[i] = st
			}
			// Each reader records when its stream first reaches the target
			// revision of the change being measured.
			var target atomic.Uint64
			var reachedN atomic.Int64
			arrivals := make([]atomic.Int64, n) // unix nanos, per stream
			latest := make([]atomic.Uint64, n)
			for i, st := range streams {
				go func() {
					for {
						m, err := st.stream.Recv()
						if err != nil {
							return
						}
						d := m.GetDelta()
						if d == nil || d.GetRevision() == 0 {
							continue
						}
						latest[i].Store(d.GetRevision())
						if tg := target.Load(); tg != 0 && d.GetRevision() >= tg && arrivals[i].Load() == 0 {
							arrivals[i].Store(time.Now().UnixNano())
							reachedN.Add(1)
						}
					}
				}()
			}
			settle := func(rev uint64) {
				waitFor(b, 60*time.Second, "all streams settled", func() error {
					for i := range latest {
						if latest[i].Load() < rev {
							return fmt.Errorf("stream %d at %d, want %d", i, latest[i].Load(), rev)
						}
					}
					return nil
				})
			}
			var lat []time.Duration
			const changes = 20
			for c := 0; c < changes; c++ {
				// Let earlier changes drain first, so each measurement is one
				// change on a quiet hub. (The store's revision is the last
				// change streams carry: leases and acks do not move it.)
				st, err := admin.Status(context.Background(), &fedv1.StatusRequest{})
				if err != nil {
					b.Fatal(err)
				}
				settle(st.GetRevision())
				for i := range arrivals {
					arrivals[i].Store(0)
				}
				reachedN.Store(0)
				target.Store(math.MaxUint64)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t0 := time.Now()
				resp, err := admin.PutPolicy(ctx, &fedv1.PutPolicyRequest{Policy: testPolicy("fanout", fmt.Sprintf("r%d", c))})
				cancel()
				if err != nil {
					b.Fatalf("change %d: %v", c, err)
				}
				target.Store(resp.GetRevision())
				// A stream may have seen the revision before target was set.
				for i := range latest {
					if latest[i].Load() >= resp.GetRevision() && arrivals[i].CompareAndSwap(0, time.Now().UnixNano()) {
						reachedN.Add(1)
					}
				}
				waitFor(b, 30*time.Second, "change reaches every stream", func() error {
					if r := reachedN.Load(); r < int64(n) {
						return fmt.Errorf("%d of %d", r, n)
					}
					return nil
				})
				for i := range arrivals {
					lat = append(lat, time.Duration(arrivals[i].Load()-t0.UnixNano()))
				}
			}
			p50, p99 := percentile(lat, 0.5), percentile(lat, 0.99)
			b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
			b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
			fmt.Printf("sync fan-out to %4d streams: p50 %v  p99 %v  (%d changes)\n", n, p50.Round(time.Microsecond), p99.Round(time.Microsecond), changes)
		})
	}
}
