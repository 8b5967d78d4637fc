package hub

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// BenchmarkUIEventStream measures the hub cost of the web UI: a real hub
// server with 100 simulated clusters (each a joined agent with a Sync
// stream, one export, and a traffic summary of three links every
// uiBenchSummaryEvery), first with no UI client, then with 10 browsers on
// the event stream, in the same run. It reports the process's CPU seconds
// per minute in each phase (the simulated agents run in the same process
// and cost the same in both) and the heap and RSS growth the streams
// bring.
func BenchmarkUIEventStream(b *testing.B) {
	const (
		clusters = 100
		browsers = 10
		phase    = 20 * time.Second
	)
	h := newTestHub(b, 1, productionTimings, func(c *Config) { c.JoinRate, c.JoinBurst = 1000, 1000 })
	admin := h.Admin()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	streams := make([]*syncStream, clusters)
	names := make([]string, clusters)
	for i := range clusters {
		names[i] = fmt.Sprintf("c%03d", i)
	}
	for i, n := range names {
		a := joinCluster(b, admin, n)
		st, err := a.syncHello(0, trafficHello())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.publishRetrying(1, []*fedv1.ExportedService{svc("default", "svc-"+n, 3)}); err != nil {
			b.Fatal(err)
		}
		streams[i] = st
		go func() { _, _ = st.next(func(*fedv1.SyncResponse) bool { return false }) }() // keep reading
	}
	// Every cluster sends a summary every uiBenchSummaryEvery, staggered.
	var wg sync.WaitGroup
	for i, st := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select { // stagger the clusters' starts over one period
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(i) * uiBenchSummaryEvery / clusters):
			}
			t := time.NewTicker(uiBenchSummaryEvery)
			defer t.Stop()
			for n := uint64(1); ; n++ {
				sum := &fedv1.TrafficSummary{IntervalMs: uint32(uiBenchSummaryEvery / time.Millisecond)}
				for k := 1; k <= 3; k++ {
					sum.Links = append(sum.Links, &fedv1.LinkTraffic{Cluster: names[(i+k)%clusters], Requests: 1000 + n%7, Errors: n % 3, P99Ms: float64(10 + n%5)})
				}
				sum.Gateways = []*fedv1.GatewayReplicaHealth{{Instance: names[i] + "-gw-0", Serving: true}}
				if st.stream.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Traffic{Traffic: sum}}) != nil {
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	defer wg.Wait()
	defer cancel()

	b.ResetTimer()
	base := measurePhase(b, phase)

	login, err := admin.CreateUILogin(ctx, &fedv1.CreateUILoginRequest{})
	if err != nil {
		b.Fatal(err)
	}
	url := "http://" + h.Server(0).HTTPAddr() + "/ui/api/events"
	var received atomic.Int64
	for range browsers {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.AddCookie(&http.Cookie{Name: UISessionCookie, Value: login.GetToken()})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("events: %d", resp.StatusCode)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { _ = resp.Body.Close() }()
			buf := make([]byte, 32<<10)
			for {
				n, err := resp.Body.Read(buf)
				received.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	before := received.Load()
	withUI := measurePhase(b, phase)
	sse := received.Load() - before
	b.StopTimer()

	b.ReportMetric(base.cpuPerMin, "cpu-s/min-no-ui")
	b.ReportMetric(withUI.cpuPerMin, "cpu-s/min-10-browsers")
	b.ReportMetric(withUI.cpuPerMin-base.cpuPerMin, "cpu-s/min-ui-cost")
	b.ReportMetric((float64(withUI.heap)-float64(base.heap))/(1<<20), "heap-MiB-ui-delta") // may be negative: unsigned subtraction would wrap
	b.ReportMetric((float64(withUI.rss)-float64(base.rss))/(1<<20), "rss-MiB-ui-delta")
	b.ReportMetric(float64(sse)/phase.Seconds()/1024/browsers, "sse-KiB/s-per-browser")
	b.Logf("100 clusters, summaries every %v: no UI %.2f CPU-s/min, heap %.1f MiB, RSS %.1f MiB; 10 browsers %.2f CPU-s/min, heap %.1f MiB, RSS %.1f MiB; %.1f KiB/s to each browser",
		uiBenchSummaryEvery, base.cpuPerMin, float64(base.heap)/(1<<20), float64(base.rss)/(1<<20),
		withUI.cpuPerMin, float64(withUI.heap)/(1<<20), float64(withUI.rss)/(1<<20), float64(sse)/phase.Seconds()/1024/browsers)
	if n := h.Server(0).ui.streams.count(); n != browsers {
		b.Errorf("%d streams open at the end, want %d (dropped as slow?)", n, browsers)
	}
}

// uiBenchSummaryEvery is how often each simulated cluster sends a traffic
// summary: 5x the agents' default (TrafficInterval 10s), to load the hub.
const uiBenchSummaryEvery = 2 * time.Second

type phaseCost struct {
	cpuPerMin float64
	heap, rss uint64
}

// measurePhase runs for d and returns the process's CPU per minute over
// it, and the live heap and RSS at its end.
func measurePhase(b *testing.B, d time.Duration) phaseCost {
	b.Helper()
	cpu0 := cpuTime(b)
	start := time.Now()
	<-time.After(d)
	cpu := cpuTime(b) - cpu0
	elapsed := time.Since(start)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return phaseCost{cpuPerMin: cpu.Seconds() / elapsed.Minutes(), heap: ms.HeapInuse, rss: rss(b)}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rss is the process's resident set in bytes (Linux), 0 elsewhere.
func rss(b *testing.B) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }()
	s, err := io.ReadAll(f)
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(s), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
