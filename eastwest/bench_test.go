package eastwest

import (
	"errors"
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
