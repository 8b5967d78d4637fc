package trust

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"testing"
)

// BenchmarkIssueX509SVID measures SVID issuance by a CA over a
// RootAuthority: a fresh P-256 key and an ECDSA signature per SVID.
func BenchmarkIssueX509SVID(b *testing.B) {
	ca, _ := newTestCA(b, "west.test")
	id := GatewayID(ca.TrustDomain())
	for b.Loop() {
		if _, err := ca.IssueX509SVID(id); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "svids/s")
}

// handshakeNsPer10 is the ns/op of the 10-trust-domain case, for the ratio
// the larger cases report.
var handshakeNsPer10 float64

// BenchmarkHandshake measures full mutual-TLS 1.3 handshakes (no
// resumption) between two federated gateways over net.Pipe, with the
// BundleSet holding 10, 100 and 1000 trust domains. It reports handshakes
// per second and, for 100 and 1000, the cost relative to 10.
func BenchmarkHandshake(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("tds=%d", n), func(b *testing.B) {
			west, _ := newTestCA(b, "west.test")
			east, _ := newTestCA(b, "east.test")
			set := NewBundleSet()
			for _, ca := range []*CA{west, east} {
				bundle, err := ca.Bundle()
				if err != nil {
					b.Fatal(err)
				}
				if err := set.Set(bundle); err != nil {
					b.Fatal(err)
				}
			}
			for i := set.Len(); i < n; i++ {
				name := fmt.Sprintf("c%04d.meshfed.local", i)
				if err := set.Set(bundleOf(b, name, forgeCA(b, nil, name))); err != nil {
					b.Fatal(err)
				}
			}
			westGW, err := NewSVIDSource(west, GatewayID(west.TrustDomain()), DefaultSVIDSourceConfig())
			if err != nil {
				b.Fatal(err)
			}
			eastGW, err := NewSVIDSource(east, GatewayID(east.TrustDomain()), DefaultSVIDSourceConfig())
			if err != nil {
				b.Fatal(err)
			}
			server := ServerTLS(westGW, set, AuthorizeKind(KindGateway))
			client := ClientTLS(eastGW, set, AuthorizeID(GatewayID(west.TrustDomain())))
			buf := make([]byte, 1)
			for b.Loop() {
				sc, cc := net.Pipe()
				s, c := tls.Server(sc, server), tls.Client(cc, client)
				done := make(chan error, 1)
				go func() {
					err := s.Handshake()
					if err == nil {
						_, err = s.Write(buf)
					}
					done <- err
				}()
				if err := c.Handshake(); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				_ = sc.Close()
				_ = cc.Close()
			}
			ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(1e9/ns, "handshakes/s")
			if n == 10 {
				handshakeNsPer10 = ns
			} else if handshakeNsPer10 > 0 {
				b.ReportMetric(ns/handshakeNsPer10, "x_vs_10")
			}
		})
	}
}
