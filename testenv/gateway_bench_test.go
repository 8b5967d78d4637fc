package testenv

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/pki"
	"github.com/meshfed/meshfed/trust/x509pem"
)

// BenchmarkGatewayDataPath compares, in one run and at the same
// concurrency, seven paths to the same HTTP echo server (1 KiB responses)
// and the same TCP echo server:
//
//  1. direct;
//  2. east's gateway egress → QUIC → west's gateway ingress (meshfed): the
//     service's port is HTTP, so the egress handles it request by request;
//  3. the same gateways with the same server behind a port declared plain
//     TCP (meshfed-l4, requests only): connection by connection, the job
//     HAProxy's layer 4 pair does;
//  4. two HAProxy processes doing the same job over TCP+TLS (the peer):
//     a TCP frontend in east, mutual TLS to a frontend in west (layer 4);
//  5. the same pair with the HTTP frontend in mode http (layer 7: per
//     request, as meshfed's egress handles an HTTP port);
//  6. the QUIC floor: a minimal quic-go tunnel pair (quicfloor_bench_test.go),
//     what quic-go itself costs here;
//  7. for bulk only, the same floor receiving with UDP GRO as the gateways
//     do (eastwest/udpgro): what GRO alone is worth.
//
// The paths take turns, round after round: 3 rounds of 3 s at the maximum
// rate (h2load --h1, 16 connections; the median round is reported) and 4 of
// 3 s at Istio's profile (1000 rps over 16 connections started 1 ms apart,
// 1 KiB; p50 and p99 added over direct, from h2load's per-request logs).
// Then 3 rounds of single-connection bulk Gbit/s (TCP echo, 256 MiB each
// way; the median is reported). It
// reports CPU per 1000 requests of the proxies, UDP datagrams per request,
// gateway RSS and each gateway's QUIC connection statistics, with ratios
// against direct, HAProxy and the floor. The gateways talk directly
// (Options.DirectGateways): no simulated WAN. The blackhole shift time is
// eastwest's BenchmarkBlackholeShift. MESHFED_BENCH_PERF=dir records the
// proxies with perf during each path's first rate and bulk rounds.
//
// It needs h2load (Debian nghttp2-client) and haproxy: `make bench`
// installs them.
func BenchmarkGatewayDataPath(b *testing.B) {
	requireBinaries(b)
	h2load, err1 := exec.LookPath("h2load")
	haproxy, err2 := exec.LookPath("haproxy")
	if err1 != nil || err2 != nil {
		b.Fatalf("h2load and haproxy are needed (make bench-tools installs them): %v %v", err1, err2)
	}
	fed := Start(b, Options{HubServers: 1, DirectGateways: true, Clusters: []Cluster{
		{Name: "east", Region: "us-east", Zone: "us-east-1a"},
		{Name: "west", Region: "us-east", Zone: "us-east-1b"}, // nearer than central
		{Name: "central", Region: "eu-central", Zone: "eu-central-1a"},
	}})
	east, west, central := fed.Cluster("east"), fed.Cluster("west"), fed.Cluster("central")
	web := west.Deploy(EchoHTTP("default/web", 1))
	west.Export("default/web")
	west.Deploy(EchoHTTP("default/web-l4", 1).WithOpaquePort())
	west.Export("default/web-l4")
	bulk := west.Deploy(EchoTCP("default/bulk", 1))
	west.Export("default/bulk")
	central.Deploy(EchoHTTP("default/web", 1))
	central.Export("default/web")
	ctx := context.Background()
	egress := map[string]string{}
	for _, svc := range []string{"default/web", "default/web-l4", "default/bulk"} {
		if err := WaitFor(ctx, 60*time.Second, func(ctx context.Context) error {
			ts, err := east.Targets(ctx, svc)
			if err == nil {
				egress[svc] = east.Loopback(ts[0])
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
	for _, svc := range []string{"default/web", "default/web-l4"} {
		if err := WaitFor(ctx, 60*time.Second, func(context.Context) error {
			if by := east.Drive(svc, Requests(20)).ByCluster(); by["west"] != 20 {
				return fmt.Errorf("east's requests to %s answered by %v, want all by west", svc, by)
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	webDirect := web.Instances()[0].Addr()
	bulkDirect := bulk.Instances()[0].Addr()
	ha := startHAProxyPair(b, haproxy, webDirect, bulkDirect)
	floor := startQUICFloor(b, webDirect, bulkDirect, false)
	floorGRO := startQUICFloor(b, webDirect, bulkDirect, true)

	paths := []struct {
		name      string
		web, bulk string
		pids      []int
	}{
		{"direct", webDirect, bulkDirect, nil},
		{"meshfed", egress["default/web"], egress["default/bulk"], []int{east.Gateway().Pid(), west.Gateway().Pid()}},
		{"meshfed-l4", egress["default/web-l4"], "", []int{east.Gateway().Pid(), west.Gateway().Pid()}}, // requests only
		{"haproxy", ha.web, ha.bulk, ha.pids},
		{"haproxy-http", ha.webHTTP, "", ha.pids},
		{"quic-floor", floor.web, floor.bulk, floor.pids},
		{"quic-floor-gro", "", floorGRO.bulk, floorGRO.pids}, // bulk only: GRO's own effect
	}
	const conns = 16
	type result struct {
		rates, bulks                             []float64
		rps, p50, p99, gbps, cpuPer1k, udpPerReq float64
		cpu, udp                                 int64
		n                                        int
		log                                      []float64 // latencies at the fixed rate, µs
	}
	res := map[string]*result{}
	url := func(web string) string { return "http://" + web + "/bytes/1024" }
	b.ResetTimer()
	for _, p := range paths {
		res[p.name] = &result{}
		if p.web != "" {
			runH2load(b, h2load, url(p.web), conns, 0, 2*time.Second, "") // warm up
		}
	}
	// The paths take turns, round after round, so that a burst of load
	// from elsewhere on the machine lands on all of them alike.
	const rateRounds, latencyRounds = 3, 4
	for round := range rateRounds {
		for _, p := range paths {
			if p.web == "" {
				continue
			}
			r := res[p.name]
			cpu0, udp0 := cpuTicks(b, p.pids), udpDatagrams(b)
			var rps float64
			var n int
			run := func() { rps, n = runH2load(b, h2load, url(p.web), conns, 0, 3*time.Second, "") }
			if round == 0 {
				profileDuring(b, p.name+".rate", p.pids, run)
			} else {
				run()
			}
			r.udp += udpDatagrams(b) - udp0
			r.cpu += cpuTicks(b, p.pids) - cpu0
			r.rates = append(r.rates, rps)
			r.n += n
		}
	}
	// Istio's profile: 1000 rps over 16 connections.
	for range latencyRounds {
		for _, p := range paths {
			if p.web == "" {
				continue
			}
			logFile := filepath.Join(b.TempDir(), p.name+".log")
			runH2load(b, h2load, url(p.web), conns, 1000/conns, 3*time.Second, logFile)
			res[p.name].log = append(res[p.name].log, latencies(b, logFile)...)
		}
	}
	// Bulk, in turns as well.
	const bulkRounds = 3
	for round := range bulkRounds {
		for _, p := range paths {
			if p.bulk == "" {
				continue
			}
			r := res[p.name]
			run := func() { r.bulks = append(r.bulks, bulkGbps(b, p.bulk, 256<<20)) }
			if round == 0 {
				profileDuring(b, p.name+".bulk", p.pids, run)
			} else {
				run()
			}
		}
	}
	for _, p := range paths {
		r := res[p.name]
		if len(r.rates) > 0 {
			slices.Sort(r.rates)
			r.rps = r.rates[len(r.rates)/2] // the median round
			r.p50, r.p99 = percentile(r.log, 50), percentile(r.log, 99)
		}
		if len(r.bulks) > 0 {
			slices.Sort(r.bulks)
			r.gbps = r.bulks[len(r.bulks)/2]
		}
		if len(p.pids) > 0 && r.n > 0 {
			r.cpuPer1k = float64(r.cpu) / clockTicks * 1000 / float64(r.n) * 1000 // ms of CPU per 1000 requests
		}
		if r.n > 0 {
			r.udpPerReq = float64(r.udp) / float64(r.n)
		}
		b.Logf("%-12s %8.0f req/s  p50 %6.0f µs  p99 %6.0f µs  bulk %5.2f Gbit/s  cpu %5.1f ms/1k req  %4.2f UDP datagrams/req", p.name, r.rps, r.p50, r.p99, r.gbps, r.cpuPer1k, r.udpPerReq)
	}
	b.StopTimer()
	for _, g := range []*Gateway{east.Gateway(), west.Gateway()} {
		out, err := httpGet(context.Background(), http.DefaultClient, "http://"+g.MetricsAddr()+"/metrics", "")
		if err != nil {
			b.Fatal(err)
		}
		for line := range strings.Lines(string(out)) {
			if strings.HasPrefix(line, "meshfed_gateway_quic_") {
				b.Logf("%s: %s", g.cluster, strings.TrimSpace(line))
			}
		}
	}

	d, m, m4, h, hh, fl, flg := res["direct"], res["meshfed"], res["meshfed-l4"], res["haproxy"], res["haproxy-http"], res["quic-floor"], res["quic-floor-gro"]
	b.ReportMetric(m.rps, "req/s")
	b.ReportMetric(m.rps/h.rps, "x-haproxy-req/s")
	b.ReportMetric(m.rps/hh.rps, "x-haproxy-http-req/s")
	b.ReportMetric(m4.rps/h.rps, "l4-x-haproxy-req/s")
	b.ReportMetric(m4.rps/fl.rps, "l4-x-quic-floor-req/s")
	b.ReportMetric(m4.cpuPer1k, "ms-cpu/1k-req-l4")
	b.ReportMetric(m.rps/d.rps, "x-direct-req/s")
	b.ReportMetric(m.rps/fl.rps, "x-quic-floor-req/s")
	b.ReportMetric(fl.rps/h.rps, "quic-floor-x-haproxy-req/s")
	b.ReportMetric(m.p50-d.p50, "µs-p50-added")
	b.ReportMetric(m.p99-d.p99, "µs-p99-added")
	b.ReportMetric(m4.p99-d.p99, "µs-p99-added-l4")
	b.ReportMetric(h.p99-d.p99, "µs-p99-added-haproxy")
	b.ReportMetric(hh.p99-d.p99, "µs-p99-added-haproxy-http")
	b.ReportMetric(m.gbps, "Gbit/s-bulk")
	b.ReportMetric(m.gbps/h.gbps, "x-haproxy-bulk")
	b.ReportMetric(m.gbps/flg.gbps, "x-quic-floor-gro-bulk")
	b.ReportMetric(flg.gbps/fl.gbps, "gro-x-no-gro-floor-bulk")
	b.ReportMetric(m.cpuPer1k, "ms-cpu/1k-req")
	b.ReportMetric(m.udpPerReq, "udp-datagrams/req")
	b.ReportMetric(h.cpuPer1k, "ms-cpu/1k-req-haproxy")
	var rss int64
	for _, g := range []*Gateway{east.Gateway(), west.Gateway()} {
		n, err := g.RSS()
		if err != nil {
			b.Fatal(err)
		}
		rss = max(rss, n)
	}
	b.ReportMetric(float64(rss)/(1<<20), "MiB-gateway-rss")

}

const clockTicks = 100 // USER_HZ

// profileDuring runs fn; with MESHFED_BENCH_PERF=dir set it records the
// processes' CPU (kernel included) with perf for the first 3 s of fn (a rate round), into
// dir/name.perf (read with `perf report -i`).
func profileDuring(b *testing.B, name string, pids []int, fn func()) {
	dir := os.Getenv("MESHFED_BENCH_PERF")
	if dir == "" || len(pids) == 0 {
		fn()
		return
	}
	ps := make([]string, len(pids))
	for i, pid := range pids {
		ps[i] = strconv.Itoa(pid)
	}
	cmd := exec.Command("perf", "record", "-g", "-o", filepath.Join(dir, name+".perf"), "-p", strings.Join(ps, ","), "--", "sleep", "3")
	if err := cmd.Start(); err != nil {
		b.Fatalf("perf: %v", err)
	}
	fn()
	_ = cmd.Wait()
}

// udpDatagrams returns the host's UDP datagrams sent so far (each QUIC
// packet on loopback is one; a GSO batch counts its segments).
func udpDatagrams(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		b.Fatal(err)
	}
	var names []string
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == "OutDatagrams" && i < len(f) {
				n, _ := strconv.ParseInt(f[i], 10, 64)
				return n
			}
		}
	}
	b.Fatal("/proc/net/snmp: no Udp OutDatagrams")
	return 0
}

// cpuTicks sums utime+stime of the processes, in clock ticks.
func cpuTicks(b *testing.B, pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			b.Fatal(err)
		}
		// Fields after the command name (which may hold spaces).
		f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		sum += u + s
	}
	return sum
}

var h2loadFinished = regexp.MustCompile(`finished in [0-9.]+m?s, ([0-9.]+) req/s`)
var h2loadRequests = regexp.MustCompile(`requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed`)

// runH2load runs h2load over HTTP/1.1 with conns connections for d (rps
// per connection when > 0), logging each request to logFile when set. It
// returns the rate and the requests that succeeded.
//
// At a fixed rate the connections start one after another, spread over
// one request interval (as fortio, Istio's load generator, spaces them):
// started together, h2load's per-connection timers fire together and every
// path would be measured on bursts of conns requests at once.
func runH2load(b *testing.B, bin, url string, conns, rps int, d time.Duration, logFile string) (float64, int) {
	b.Helper()
	args := []string{"--h1", "-c", strconv.Itoa(conns), "-t", "1"}
	if rps > 0 {
		stagger := time.Second / time.Duration(rps*conns)
		args = append(args, "--rps", strconv.Itoa(rps), "-n", strconv.Itoa(rps*conns*int(d.Seconds())),
			"-r", "1", "--rate-period", fmt.Sprintf("%dms", max(1, stagger.Milliseconds())))
	} else {
		args = append(args, "-D", strconv.Itoa(int(d.Seconds())))
	}
	if logFile != "" {
		args = append(args, "--log-file", logFile)
	}
	out, err := exec.Command(bin, append(args, url)...).CombinedOutput()
	if err != nil {
		b.Fatalf("h2load %v: %v\n%s", args, err, out)
	}
	m := h2loadFinished.FindSubmatch(out)
	r := h2loadRequests.FindSubmatch(out)
	if m == nil || r == nil {
		b.Fatalf("h2load output not understood:\n%s", out)
	}
	if failed, _ := strconv.Atoi(string(r[3])); failed > 0 {
		b.Errorf("h2load: %s requests failed against %s", r[3], url)
	}
	rate, _ := strconv.ParseFloat(string(m[1]), 64)
	ok, _ := strconv.Atoi(string(r[2]))
	return rate, ok
}

// latencies reads an h2load log (start µs, status, duration µs per line)
// and returns the durations in µs.
func latencies(b *testing.B, path string) []float64 {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var ds []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 3 {
			continue
		}
		v, err := strconv.ParseFloat(fs[2], 64)
		if err == nil {
			ds = append(ds, v)
		}
	}
	if len(ds) < 100 {
		b.Fatalf("h2load log %s: %d requests", path, len(ds))
	}
	return ds
}

// percentile returns the p-th percentile of ds (sorting it).
func percentile(ds []float64, p int) float64 {
	slices.Sort(ds)
	return ds[len(ds)*p/100]
}

// bulkGbps sends n bytes through a TCP echo at addr while reading them
// back, on one connection, and returns Gbit/s one way.
func bulkGbps(b *testing.B, addr string, n int) float64 {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	br := bufio.NewReaderSize(c, 64<<10)
	if _, err := br.ReadBytes('\n'); err != nil { // the echo's greeting
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
	if _, err := io.CopyN(io.Discard, br, int64(n)); err != nil {
		b.Fatalf("bulk through %s: %v", addr, err)
	}
	return float64(n) * 8 / time.Since(start).Seconds() / 1e9
}

// benchPKI writes a CA (ca.pem) and two leaves with their keys (a.pem,
// b.pem; DNS names haproxy-a and haproxy-b, client and server use) to a
// new directory, for the HAProxy pair and the QUIC floor. The same CA and
// leaf helpers as the hub's (internal/pki); HAProxy checks the DNS name,
// not the SPIFFE ID.
func benchPKI(b *testing.B) string {
	dir := b.TempDir()
	ca, err := pki.NewCA("bench.meshfed", 24*time.Hour, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), x509pem.EncodeCerts(ca.Cert), 0o600); err != nil {
		b.Fatal(err)
	}
	for _, who := range []string{"a", "b"} {
		key, err := pki.NewKey()
		if err != nil {
			b.Fatal(err)
		}
		cert, err := ca.Sign(&key.PublicKey, pki.LeafOptions{SPIFFEID: "spiffe://bench.meshfed/haproxy-" + who,
			DNSNames: []string{"haproxy-" + who}, TTL: 24 * time.Hour, Now: time.Now(), Server: true, Client: true})
		if err != nil {
			b.Fatal(err)
		}
		kp, err := x509pem.EncodeKey(key)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, who+".pem"), append(x509pem.EncodeCerts(cert), kp...), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

// haproxyPair is the peer: two haproxy processes.
type haproxyPair struct {
	web     string // A's TCP frontend for the HTTP echo
	webHTTP string // A's HTTP frontend for it: per request, as meshfed's egress
	bulk    string // A's TCP frontend for the TCP echo
	pids    []int
}

// startHAProxyPair runs two haproxy processes: A listens for the HTTP and
// the bulk echo and forwards each over mutual TLS to B, which forwards to
// the echo servers over TCP. A serves the HTTP echo twice: at layer 4 (a
// TCP splice, the lightest job) and at layer 7 (mode http, each request
// parsed and sent on a reused server connection: the job meshfed's egress
// does for an HTTP port, which is what per-request failover needs).
func startHAProxyPair(b *testing.B, bin, web, bulk string) haproxyPair {
	dir := benchPKI(b)
	ports, err := freePorts(5)
	if err != nil {
		b.Fatal(err)
	}
	aWeb, aBulk, bWeb, bBulk, aWebHTTP := loopback(ports[0]), loopback(ports[1]), loopback(ports[2]), loopback(ports[3]), loopback(ports[4])
	common := "global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n"
	tls := func(addr string) string {
		return fmt.Sprintf("  server s %s ssl crt %s/a.pem ca-file %s/ca.pem verify required verifyhost haproxy-b sni str(haproxy-b)\n", addr, dir, dir)
	}
	cfgA := common + "listen web\n  bind " + aWeb + "\n" + tls(bWeb) + "listen bulk\n  bind " + aBulk + "\n" + tls(bBulk) +
		"listen webhttp\n  mode http\n  bind " + aWebHTTP + "\n  option http-keep-alive\n  http-reuse always\n  timeout http-keep-alive 60s\n" + tls(bWeb)
	cfgB := common + fmt.Sprintf("listen web\n  bind %s ssl crt %s/b.pem ca-file %s/ca.pem verify required\n  server s %s\n", bWeb, dir, dir, web) +
		fmt.Sprintf("listen bulk\n  bind %s ssl crt %s/b.pem ca-file %s/ca.pem verify required\n  server s %s\n", bBulk, dir, dir, bulk)
	var pids []int
	for name, cfg := range map[string]string{"a": cfgA, "b": cfgB} {
		path := filepath.Join(dir, name+".cfg")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(bin, "-db", "-f", path)
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		pids = append(pids, cmd.Process.Pid)
	}
	for _, a := range []string{aWeb, aBulk, bWeb, bBulk, aWebHTTP} {
		if err := WaitFor(context.Background(), 10*time.Second, func(context.Context) error {
			c, err := net.Dial("tcp", a)
			if err == nil {
				_ = c.Close()
			}
			return err
		}); err != nil {
			la, _ := os.ReadFile(filepath.Join(dir, "a.log"))
			lb, _ := os.ReadFile(filepath.Join(dir, "b.log"))
			b.Fatalf("haproxy: %v\na: %s\nb: %s", err, la, lb)
		}
	}
	return haproxyPair{web: aWeb, webHTTP: aWebHTTP, bulk: aBulk, pids: pids}
}
