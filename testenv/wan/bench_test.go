package wan

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

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
