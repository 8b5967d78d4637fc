package eastwest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"
)

// BenchmarkBlackholeShift measures how long a remote gateway whose packets
// are silently dropped (the WAN simulator's partition) stays in
// selection: from the partition until the egress gateway takes it out.
// The budget is ProbeInterval + ProbeFailures × ProbeTimeout (700 ms by
// default). Each iteration partitions, waits, heals and waits for the
// gateway to come back.
func BenchmarkBlackholeShift(b *testing.B) {
	e := startTripleB(b)
	var shifts []time.Duration
	for b.Loop() {
		cut := time.Now()
		e.link.Partition()
		waitFor(b, 10*time.Second, func() error {
			if e.westGW.g.clusterUp(e.east.name) {
				return errors.New("east still selected")
			}
			return nil
		})
		shifts = append(shifts, time.Since(cut))
		e.link.Heal()
		waitFor(b, 10*time.Second, func() error {
			if !e.westGW.g.clusterUp(e.east.name) {
				return errors.New("east not back")
			}
			return nil
		})
	}
	slices.Sort(shifts)
	b.ReportMetric(float64(shifts[len(shifts)/2].Milliseconds()), "ms-shift-p50")
	b.ReportMetric(float64(shifts[len(shifts)-1].Milliseconds()), "ms-shift-max")
}

// BenchmarkHTTPRoundTripAdded measures, in one process, the latency two
// gateways add to a sequential HTTP/1.1 GET on a keep-alive connection
// (1 KiB response), against the same GET straight to the server: the
// gateway's own cost without a load generator competing for the CPU.
func BenchmarkHTTPRoundTripAdded(b *testing.B) {
	body := make([]byte, 1024)
	addr := httpPair(b, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
	direct, _ := httpHandlerServer(b, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
	c := &http.Client{Timeout: 5 * time.Second}
	get := func(url string) time.Duration {
		start := time.Now()
		resp, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return time.Since(start)
	}
	var d, m []time.Duration
	for range 200 { // warm up both
		get("http://" + addr + "/")
		get("http://" + direct.String() + "/")
	}
	for b.Loop() {
		m = append(m, get("http://"+addr+"/"))
		d = append(d, get("http://"+direct.String()+"/"))
	}
	slices.Sort(d)
	slices.Sort(m)
	pct := func(s []time.Duration, p int) float64 { return float64(s[len(s)*p/100].Microseconds()) }
	b.ReportMetric(pct(m, 50)-pct(d, 50), "µs-p50-added")
	b.ReportMetric(pct(m, 99)-pct(d, 99), "µs-p99-added")
	b.ReportMetric(pct(d, 50), "µs-p50-direct")
}

// BenchmarkBulkTCP measures single-connection throughput through two
// gateways (TCP echo, 64 MiB each way at once), in one process.
func BenchmarkBulkTCP(b *testing.B) {
	p := startPairB(b)
	const n = 64 << 20
	for b.Loop() {
		c, err := dialTCP(p.tcpPort)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		go func() {
			buf := make([]byte, 64<<10)
			for left := n; left > 0; left -= len(buf) {
				if _, err := c.Write(buf[:min(len(buf), left)]); err != nil {
					return
				}
			}
		}()
		if _, err := io.CopyN(io.Discard, c, n); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(n)*8/time.Since(start).Seconds()/1e9, "Gbit/s")
		_ = c.Close()
	}
}

// BenchmarkPolicyRequestRate compares, in one run, the HTTP request rate
// through two gateways with no policy and with a 10-route policy whose
// last route is the one every request matches (9 prefix misses first):
// 8 keep-alive clients for 2 s per round, 3 rounds of each, alternating.
//
//	go test ./eastwest -run '^$' -bench BenchmarkPolicyRequestRate -benchtime 1x
func BenchmarkPolicyRequestRate(b *testing.B) {
	r := startPolicyRig(b, plainExporter("west", "us-west", "us-west-1a"))
	routes := ""
	for i := 1; i <= 9; i++ {
		routes += fmt.Sprintf(`{"match":[{"uri":{"prefix":"/r%d/"}}],"route":[{"destination":{"cluster":"west"}}]},`, i)
	}
	tenRoutes := trafficPolicy(b, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","http":[`+routes+`{"match":[{"uri":{"prefix":"/"}}],"route":[{"destination":{"cluster":"west"}}]}]}}`, 2)
	url := fmt.Sprintf("http://127.0.0.1:%d/x", r.egress)
	rate := func() float64 {
		const clients = 8
		deadline := time.Now().Add(2 * time.Second)
		counts := make(chan int, clients)
		for range clients {
			go func() {
				c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 5 * time.Second}
				n := 0
				for time.Now().Before(deadline) {
					resp, err := c.Get(url)
					if err != nil {
						break
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						n++
					}
				}
				counts <- n
			}()
		}
		total := 0
		for range clients {
			total += <-counts
		}
		return float64(total) / 2
	}
	var plain, routed []float64
	for b.Loop() {
		for range 3 {
			r.apply()
			plain = append(plain, rate())
			r.apply(tenRoutes)
			routed = append(routed, rate())
		}
	}
	mean := func(s []float64) float64 {
		t := 0.0
		for _, x := range s {
			t += x
		}
		return t / float64(len(s))
	}
	b.ReportMetric(mean(plain), "req/s-no-policy")
	b.ReportMetric(mean(routed), "req/s-10-routes")
	b.ReportMetric(mean(routed)/mean(plain), "ratio")
}
