package testenv

import (
	"bufio"
	"context"
	"io"
	"net"
	"testing"
	"time"
)

var threeClusters = []Cluster{
	{Name: "east", Region: "us-east", Zone: "us-east-1a"},
	{Name: "west", Region: "us-west", Zone: "us-west-1a"},
	{Name: "central", Region: "eu-central", Zone: "eu-central-1a"},
}

// BenchmarkStart measures the time from New to ready (every API server,
// hub server and agent ready: each agent joined and holds the hub state)
// for 3 clusters and a 3-server hub, with cached binaries (the meshfed
// build is done before the clock starts), and the resident memory of each
// cluster's etcd, kube-apiserver and agent right after.
func BenchmarkStart(b *testing.B) {
	requireBinaries(b)
	if _, err := meshfedBinary(); err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	var clusterRSS, apiserverRSS, etcdRSS, agentRSS, hubRSS int64
	var clusters, hubServers int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		fed, err := New(context.Background(), Options{HubServers: 3, Clusters: threeClusters, Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		b.StopTimer()
		for _, c := range fed.Clusters() {
			cp := c.ControlPlane()
			a, err1 := cp.APIServer().RSS()
			e, err2 := cp.Etcd().RSS()
			if err1 != nil || err2 != nil {
				b.Fatal(err1, err2)
			}
			ag, err := c.Agent().RSS()
			if err != nil {
				b.Fatal(err)
			}
			apiserverRSS += a
			etcdRSS += e
			agentRSS += ag
			clusterRSS += a + e + ag
			clusters++
		}
		for _, s := range fed.Hub().Servers() {
			n, err := s.RSS()
			if err != nil {
				b.Fatal(err)
			}
			hubRSS += n
			hubServers++
		}
		if err := fed.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	const mib = 1 << 20
	b.ReportMetric(total.Seconds()/float64(b.N), "s-to-ready")
	b.ReportMetric(float64(clusterRSS)/float64(clusters)/mib, "MiB-rss/cluster")
	b.ReportMetric(float64(apiserverRSS)/float64(clusters)/mib, "MiB-rss/apiserver")
	b.ReportMetric(float64(etcdRSS)/float64(clusters)/mib, "MiB-rss/etcd")
	b.ReportMetric(float64(agentRSS)/float64(clusters)/mib, "MiB-rss/agent")
	b.ReportMetric(float64(hubRSS)/float64(hubServers)/mib, "MiB-rss/hub-server")
}

// BenchmarkRelay compares a perfect TCP relay (no impairment) with a direct
// loopback connection, in the same run: round-trip time of 1-byte
// ping-pongs, and one-way throughput of a bulk transfer.
func BenchmarkRelay(b *testing.B) {
	srv := startLabServer(b)
	link := NewLink(1)
	defer func() { _ = link.Close() }()
	relayAddr, err := link.Relay("tcp", srv)
	if err != nil {
		b.Fatal(err)
	}
	const pings = 2000
	const bulk = 256 << 20
	var rttDirect, rttRelay, bulkDirect, bulkRelay time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rttDirect += pingPong(b, srv, pings)
		rttRelay += pingPong(b, relayAddr, pings)
		bulkDirect += transfer(b, srv, bulk)
		bulkRelay += transfer(b, relayAddr, bulk)
	}
	n := float64(b.N)
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / n / pings }
	mbps := func(d time.Duration) float64 { return float64(bulk) * n / d.Seconds() / 1e6 }
	b.ReportMetric(us(rttDirect), "µs-rtt-direct")
	b.ReportMetric(us(rttRelay), "µs-rtt-relay")
	b.ReportMetric(us(rttRelay)-us(rttDirect), "µs-rtt-added")
	b.ReportMetric(us(rttRelay)/us(rttDirect), "rtt-ratio")
	b.ReportMetric(mbps(bulkDirect), "MB/s-direct")
	b.ReportMetric(mbps(bulkRelay), "MB/s-relay")
	b.ReportMetric(mbps(bulkRelay)/mbps(bulkDirect), "throughput-ratio")
}

// startLabServer serves two modes, chosen by the first byte: 'p' echoes
// single bytes; 't' reads to EOF and then answers one byte.
func startLabServer(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				r := bufio.NewReader(c)
				mode, err := r.ReadByte()
				if err != nil {
					return
				}
				switch mode {
				case 'p':
					buf := make([]byte, 1)
					for {
						if _, err := io.ReadFull(r, buf); err != nil {
							return
						}
						if _, err := c.Write(buf); err != nil {
							return
						}
					}
				case 't':
					if _, err := io.Copy(io.Discard, r); err != nil {
						return
					}
					_, _ = c.Write([]byte{'d'})
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func pingPong(b *testing.B, addr string, n int) time.Duration {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if _, err := c.Write([]byte{'p'}); err != nil {
		b.Fatal(err)
	}
	buf := []byte{0}
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

func transfer(b *testing.B, addr string, n int) time.Duration {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if _, err := c.Write([]byte{'t'}); err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	start := time.Now()
	for sent := 0; sent < n; sent += len(chunk) {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(c, []byte{0}); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}
