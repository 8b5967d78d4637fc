package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/mcsdns"
)

// dnsLoad sends queries for names round-robin to addr over UDP from
// clients goroutines (one socket each) for d, and returns the answers per
// second and the latency percentiles. Every answer must be NOERROR.
func dnsLoad(b *testing.B, addr string, names []string, clients int, d time.Duration) (qps float64, p50, p99 time.Duration) {
	b.Helper()
	var (
		mu   sync.Mutex
		lats []time.Duration
		bad  atomic.Int64
		wg   sync.WaitGroup
	)
	stop := time.Now().Add(d)
	for c := range clients {
		wg.Go(func() {
			conn, err := dns.Dial("udp", addr)
			if err != nil {
				bad.Add(1)
				return
			}
			defer func() { _ = conn.Close() }()
			var mine []time.Duration
			m := new(dns.Msg)
			for i := c; time.Now().Before(stop); i++ {
				m.SetQuestion(names[i%len(names)], dns.TypeA)
				start := time.Now()
				_ = conn.SetDeadline(start.Add(time.Second))
				if err := conn.WriteMsg(m); err != nil {
					bad.Add(1)
					continue
				}
				r, err := conn.ReadMsg()
				if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
					bad.Add(1)
					continue
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if n := bad.Load(); n > 0 {
		b.Fatalf("%d queries failed", n)
	}
	slices.Sort(lats)
	return float64(len(lats)) / d.Seconds(), lats[len(lats)/2], lats[len(lats)*99/100]
}

// serveUDP runs h on a loopback UDP socket until the benchmark ends.
func serveUDP(b *testing.B, h dns.Handler) string {
	b.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: h, UDPSize: 4096}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	b.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

// BenchmarkDNS measures the agent's DNS server: queries per second and
// latency for A records of a 1000-import zone, from 8 concurrent UDP
// clients for 2 s each round, (1) on a still zone, (2) while the zone is
// rebuilt from a changing view every 10 ms (the agent's path: planImports,
// dnsServices, NewZone, SetZone), against (0) a trivial miekg/dns server
// that answers one fixed A record, in the same run. Reported: qps and p99
// of each, and the ratios to the baseline.
func BenchmarkDNS(b *testing.B) {
	const (
		imports = 1000
		clients = 8
		round   = 2 * time.Second
	)
	v := newView()
	v.revision = 1
	ips := map[federation.ServiceKey][]netip.Addr{}
	var names []string
	for i := range imports {
		svc := &fedv1.ExportedService{Namespace: "ns" + fmt.Sprint(i%10), Name: fmt.Sprintf("svc-%d", i),
			Ports: []*fedv1.ServicePort{{Name: "http", Port: 8080, Protocol: "HTTP"}}}
		v.exports[exportKey{cluster: "east", service: svc.Namespace + "/" + svc.Name}] = &fedv1.ExportRecord{Cluster: "east", Service: svc, CreateRevision: 1}
		ips[federation.MustServiceKey(svc.Namespace+"/"+svc.Name)] = []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})}
		names = append(names, svc.Name+"."+svc.Namespace+".svc.clusterset.local.")
	}
	zoneOf := func(v *view) *mcsdns.Zone {
		plans, _ := planImports("west", v)
		return mcsdns.NewZone(uint32(v.revision), 0, dnsServices(plans, ips))
	}

	for range b.N {
		b.StopTimer()
		baseline := serveUDP(b, dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(10, 96, 0, 1)}}
			_ = w.WriteMsg(m)
		}))
		cfg := mcsdns.DefaultConfig()
		cfg.QPS = 0 // measure the server, not the bound
		srv, err := mcsdns.NewServer(cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		srv.SetZone(zoneOf(v))
		ctx, cancel := context.WithCancel(context.Background())
		pc, ln, err := listenDNS("127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx, pc, ln) }()
		addr := pc.LocalAddr().String()
		b.StartTimer()

		baseQPS, baseP50, baseP99 := dnsLoad(b, baseline, names, clients, round)
		stillQPS, stillP50, stillP99 := dnsLoad(b, addr, names, clients, round)

		// View changes: every 10 ms a new revision (one export's endpoints
		// change), rebuilt into a zone and swapped in.
		stopChanges := make(chan struct{})
		var rebuilds atomic.Int64
		var rebuildTime atomic.Int64
		go func() {
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			cur := v.snapshot()
			for rev := uint64(2); ; rev++ {
				select {
				case <-stopChanges:
					return
				case <-t.C:
				}
				k := exportKey{cluster: "east", service: fmt.Sprintf("ns%d/svc-%d", rev%10, rev%imports)}
				if e := cur.exports[k]; e != nil {
					svc := &fedv1.ExportedService{Namespace: e.GetService().GetNamespace(), Name: e.GetService().GetName(), Ports: e.GetService().GetPorts(),
						Endpoints: []*fedv1.EndpointGroup{{Ready: uint32(rev % 7)}}}
					cur.exports[k] = &fedv1.ExportRecord{Cluster: "east", Service: svc, CreateRevision: 1}
				}
				cur.revision = rev
				start := time.Now()
				srv.SetZone(zoneOf(cur))
				rebuildTime.Add(int64(time.Since(start)))
				rebuilds.Add(1)
			}
		}()
		chgQPS, chgP50, chgP99 := dnsLoad(b, addr, names, clients, round)
		close(stopChanges)
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		n := rebuilds.Load()
		b.ReportMetric(baseQPS, "baseline_qps")
		b.ReportMetric(float64(baseP99.Microseconds()), "baseline_p99_us")
		b.ReportMetric(stillQPS, "qps")
		b.ReportMetric(float64(stillP99.Microseconds()), "p99_us")
		b.ReportMetric(chgQPS, "changing_qps")
		b.ReportMetric(float64(chgP99.Microseconds()), "changing_p99_us")
		b.ReportMetric(stillQPS/baseQPS, "qps_ratio")
		b.ReportMetric(chgQPS/baseQPS, "changing_qps_ratio")
		b.ReportMetric(float64(n), "zone_swaps")
		if n > 0 {
			b.ReportMetric(float64(time.Duration(rebuildTime.Load()/n).Microseconds()), "zone_build_us")
		}
		b.Logf("baseline %.0f q/s p50 %v p99 %v; agent %.0f q/s p50 %v p99 %v; under %d zone swaps %.0f q/s p50 %v p99 %v",
			baseQPS, baseP50, baseP99, stillQPS, stillP50, stillP99, n, chgQPS, chgP50, chgP99)
		b.StartTimer()
	}
}
