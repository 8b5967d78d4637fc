package trust_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/trust"
)

func ExampleWorkloadID() {
	td := trust.DefaultTrustDomain(federation.MustClusterName("west"))
	web, err := trust.WorkloadID(td, "shop", "web")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(web)
	fmt.Println(trust.GatewayID(td))
	fmt.Println(trust.AgentID(td))
	// Output:
	// spiffe://west.meshfed.local/ns/shop/sa/web
	// spiffe://west.meshfed.local/meshfed/gateway
	// spiffe://west.meshfed.local/meshfed/agent
}

func ExampleParseIdentity() {
	for _, s := range []string{
		"spiffe://west.meshfed.local/ns/shop/sa/web",
		"spiffe://east.meshfed.local/meshfed/gateway",
		"spiffe://east.meshfed.local/admin",
	} {
		id, err := trust.ParseIdentity(s)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		if id.Kind() == trust.KindWorkload {
			fmt.Println(id.Kind(), id.TrustDomain(), id.Namespace(), id.ServiceAccount())
			continue
		}
		fmt.Println(id.Kind(), id.TrustDomain())
	}
	// Output:
	// workload west.meshfed.local shop web
	// gateway east.meshfed.local
	// error: trust: identity "spiffe://east.meshfed.local/admin": path must be /ns/<namespace>/sa/<service-account>, /meshfed/gateway or /meshfed/agent
}

// A cluster CA over a self-generated root kept in a file, issuing its
// gateway's SVID.
func ExampleNewCA() {
	dir, err := os.MkdirTemp("", "trust-example")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()

	cfg := trust.DefaultRootConfig()
	cfg.TrustDomain = trust.DefaultTrustDomain(federation.MustClusterName("west"))
	root, err := trust.NewRootAuthority(cfg, trust.NewFileStore(filepath.Join(dir, "root.pem")))
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = root.Close() }()
	ca, err := trust.NewCA(root, trust.DefaultCAConfig())
	if err != nil {
		log.Fatal(err)
	}
	svid, err := ca.IssueX509SVID(trust.GatewayID(ca.TrustDomain()))
	if err != nil {
		log.Fatal(err)
	}
	leaf := svid.Certificates[0]
	fmt.Println(leaf.URIs[0], leaf.IsCA, leaf.NotAfter.Sub(leaf.NotBefore))
	bundle, err := ca.Bundle()
	if err != nil {
		log.Fatal(err)
	}
	seq, _ := bundle.SequenceNumber()
	hint, _ := bundle.RefreshHint()
	fmt.Println(len(bundle.X509Authorities()), seq, hint)
	// Output:
	// spiffe://west.meshfed.local/meshfed/gateway false 1h1m0s
	// 1 1 5m0s
}

// Rotation in three phases, driven here by a fake clock.
func ExampleRootAuthority_Rotate() {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := trust.DefaultRootConfig()
	cfg.TrustDomain = spiffeid.RequireTrustDomainFromString("west.meshfed.local")
	cfg.Clock = func() time.Time { return now }
	root, err := trust.NewRootAuthority(cfg, trust.NewFileStore(filepath.Join(os.TempDir(), fmt.Sprintf("trust-rotate-%d.pem", os.Getpid()))))
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.Remove(filepath.Join(os.TempDir(), fmt.Sprintf("trust-rotate-%d.pem", os.Getpid()))) }()
	defer func() { _ = root.Close() }()
	show := func() {
		s := root.Status()
		fmt.Printf("%-8s seq=%d roots=%d issuing-new=%v\n", s.Phase, s.Sequence, len(s.Published), s.Issuing.Equal(s.Published[len(s.Published)-1]))
	}
	show()
	if _, err := root.Rotate(); err != nil {
		log.Fatal(err)
	}
	show()
	now = now.Add(cfg.PrepareDuration)
	show()
	now = now.Add(cfg.MaxSVIDTTL + cfg.ClockSkew)
	show()
	// Output:
	// stable   seq=1 roots=1 issuing-new=true
	// prepare  seq=2 roots=2 issuing-new=false
	// switched seq=2 roots=2 issuing-new=true
	// stable   seq=3 roots=1 issuing-new=true
}

// Mutual TLS between two clusters' gateways, each trusting the federated
// bundle set.
func ExampleServerTLS() {
	newCA := func(cluster string) *trust.CA {
		cfg := trust.DefaultRootConfig()
		cfg.TrustDomain = trust.DefaultTrustDomain(federation.MustClusterName(cluster))
		dir, err := os.MkdirTemp("", "trust-example")
		if err != nil {
			log.Fatal(err)
		}
		defer func() { _ = os.RemoveAll(dir) }()
		root, err := trust.NewRootAuthority(cfg, trust.NewFileStore(filepath.Join(dir, "root.pem")))
		if err != nil {
			log.Fatal(err)
		}
		ca, err := trust.NewCA(root, trust.DefaultCAConfig())
		if err != nil {
			log.Fatal(err)
		}
		return ca
	}
	west, east := newCA("west"), newCA("east")
	bundles := trust.NewBundleSet() // in production: fed by the hub
	for _, ca := range []*trust.CA{west, east} {
		b, err := ca.Bundle()
		if err != nil {
			log.Fatal(err)
		}
		if err := bundles.Set(b); err != nil {
			log.Fatal(err)
		}
	}
	westGW, err := trust.NewSVIDSource(west, trust.GatewayID(west.TrustDomain()), trust.DefaultSVIDSourceConfig())
	if err != nil {
		log.Fatal(err)
	}
	eastGW, err := trust.NewSVIDSource(east, trust.GatewayID(east.TrustDomain()), trust.DefaultSVIDSourceConfig())
	if err != nil {
		log.Fatal(err)
	}
	server := trust.ServerTLS(westGW, bundles, trust.AuthorizeKind(trust.KindGateway))
	client := trust.ClientTLS(eastGW, bundles, trust.AuthorizeID(trust.GatewayID(west.TrustDomain())))

	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer func() { _ = c.Close() }()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			return
		}
		id, _ := trust.VerifyPeer(tc.ConnectionState().PeerCertificates, bundles, trust.AuthorizeFederated(), time.Now())
		fmt.Fprintf(tc, "hello %s\n", id)
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	buf := make([]byte, 128)
	n, err := conn.Read(buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(buf[:n]))
	// Output:
	// hello spiffe://east.meshfed.local/meshfed/gateway
}

// Converting between go-spiffe bundles and the federation API's
// TrustBundle, as the agent and hub do on the Sync stream.
func ExampleBundleToProto() {
	cfg := trust.DefaultRootConfig()
	cfg.TrustDomain = spiffeid.RequireTrustDomainFromString("west.meshfed.local")
	path := filepath.Join(os.TempDir(), fmt.Sprintf("trust-proto-%d.pem", os.Getpid()))
	defer func() { _ = os.Remove(path) }()
	root, err := trust.NewRootAuthority(cfg, trust.NewFileStore(path))
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = root.Close() }()
	b, err := root.Bundle()
	if err != nil {
		log.Fatal(err)
	}
	p := trust.BundleToProto(b)
	fmt.Println(p.GetTrustDomain(), len(p.GetX509Authorities()), p.GetRefreshHintSeconds(), p.GetSequenceNumber())
	back, err := trust.BundleFromProto(p)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(back.Equal(b))
	// Output:
	// west.meshfed.local 1 300 1
	// true
}

// Serving a trust domain's bundle under the https_spiffe profile and
// fetching it with a Fetcher configured with all four parameters.
func ExampleFetcher() {
	cfg := trust.DefaultRootConfig()
	cfg.TrustDomain = spiffeid.RequireTrustDomainFromString("west.meshfed.local")
	path := filepath.Join(os.TempDir(), fmt.Sprintf("trust-fetch-%d.pem", os.Getpid()))
	defer func() { _ = os.Remove(path) }()
	root, err := trust.NewRootAuthority(cfg, trust.NewFileStore(path))
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = root.Close() }()
	ca, err := trust.NewCA(root, trust.DefaultCAConfig())
	if err != nil {
		log.Fatal(err)
	}
	endpointID := trust.AgentID(ca.TrustDomain())
	svids, err := trust.NewSVIDSource(ca, endpointID, trust.DefaultSVIDSourceConfig())
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: trust.BundleHandler(ca.TrustDomain(), ca)}
	go func() { _ = srv.Serve(tls.NewListener(ln, trust.BundleEndpointTLS(svids))) }()
	defer func() { _ = srv.Close() }()

	// The consumer was given the bundle once, out of band, to bootstrap.
	bootstrap := trust.NewBundleSet()
	b, _ := ca.Bundle()
	if err := bootstrap.Set(b); err != nil {
		log.Fatal(err)
	}
	fc := trust.DefaultFetcherConfig()
	fc.TrustDomain = ca.TrustDomain()
	fc.URL = "https://" + ln.Addr().String() + "/"
	fc.Profile = trust.ProfileHTTPSSPIFFE
	fc.EndpointID = endpointID
	fc.EndpointBundles = bootstrap
	f, err := trust.NewFetcher(fc)
	if err != nil {
		log.Fatal(err)
	}
	got, err := f.Fetch(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	seq, _ := got.SequenceNumber()
	fmt.Println(got.TrustDomain(), len(got.X509Authorities()), seq, f.RefreshInterval(got))
	// Output:
	// west.meshfed.local 1 1 5m0s
}
