package trust

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// webPKI is a test Web PKI: a CA and a server certificate for 127.0.0.1.
type webPKI struct {
	ca     *testCert
	server tls.Certificate
	roots  *x509.CertPool
}

func newWebPKI(t testing.TB) webPKI {
	t.Helper()
	ca := forge(t, nil, certOpts{cn: "Test Web CA", isCA: true, keyUsage: x509.KeyUsageCertSign})
	leaf := forge(t, ca, certOpts{cn: "127.0.0.1", ips: []net.IP{net.IPv4(127, 0, 0, 1)}, dnsNames: []string{"localhost"},
		keyUsage: x509.KeyUsageDigitalSignature, extUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	return webPKI{ca: ca, roots: roots, server: tls.Certificate{Certificate: [][]byte{leaf.cert.Raw}, PrivateKey: leaf.key, Leaf: leaf.cert}}
}

// endpoint is a bundle endpoint under test.
type endpoint struct{ URL string }

// startEndpoint serves h over TLS with cfg on loopback. (httptest's
// StartTLS would add its own certificate, which wins over GetCertificate.)
func startEndpoint(t testing.TB, h http.Handler, cfg *tls.Config) endpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.Serve(tls.NewListener(ln, cfg)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return endpoint{URL: "https://" + ln.Addr().String()}
}

func fetcherConfig(t testing.TB, name, url string, p Profile) FetcherConfig {
	t.Helper()
	cfg := DefaultFetcherConfig()
	cfg.TrustDomain = td(t, name)
	cfg.URL = url
	cfg.Profile = p
	cfg.Timeout = 5 * time.Second
	return cfg
}

func newFetcher(t testing.TB, cfg FetcherConfig) *Fetcher {
	t.Helper()
	f, err := NewFetcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestBundleEndpointHTTPSWeb(t *testing.T) {
	ca, _ := newTestCA(t, "a.test")
	web := newWebPKI(t)
	srv := startEndpoint(t, BundleHandler(ca.TrustDomain(), ca), &tls.Config{Certificates: []tls.Certificate{web.server}})

	cfg := fetcherConfig(t, "a.test", srv.URL+"/bundle", ProfileHTTPSWeb)
	cfg.WebPKIRoots = web.roots
	got, err := newFetcher(t, cfg).Fetch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ca.Bundle()
	if !got.Equal(want) {
		t.Errorf("fetched bundle differs from the served one")
	}
	if seq, ok := got.SequenceNumber(); !ok || seq != 1 {
		t.Errorf("sequence = %d, %v", seq, ok)
	}
	if h, ok := got.RefreshHint(); !ok || h != DefaultRefreshHint {
		t.Errorf("refresh hint = %v, %v", h, ok)
	}

	// Without the test CA among its roots, the fetcher refuses the server.
	cfg.WebPKIRoots = x509.NewCertPool()
	if _, err := newFetcher(t, cfg).Fetch(t.Context()); err == nil {
		t.Error("fetched from an endpoint whose certificate does not verify")
	}
}

func TestBundleEndpointHTTPSSPIFFE(t *testing.T) {
	ca, _ := newTestCA(t, "a.test")
	endpointID := AgentID(ca.TrustDomain())
	svids, err := NewSVIDSource(ca, endpointID, DefaultSVIDSourceConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv := startEndpoint(t, BundleHandler(ca.TrustDomain(), ca), BundleEndpointTLS(svids))

	// The endpoint serves its own trust domain: the operator bootstraps
	// the fetcher with that bundle once.
	bootstrap := NewBundleSet()
	b, _ := ca.Bundle()
	if err := bootstrap.Set(b); err != nil {
		t.Fatal(err)
	}
	cfg := fetcherConfig(t, "a.test", srv.URL, ProfileHTTPSSPIFFE)
	cfg.EndpointID = endpointID
	cfg.EndpointBundles = bootstrap
	f := newFetcher(t, cfg)
	got, err := f.Fetch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(b) {
		t.Error("fetched bundle differs from the served one")
	}
	// From now on the fetched bundle authenticates the endpoint; the
	// bootstrap bundle is no longer needed.
	bootstrap.Remove(ca.TrustDomain())
	f.client.CloseIdleConnections()
	if _, err := f.Fetch(t.Context()); err != nil {
		t.Errorf("second fetch without the bootstrap bundle: %v", err)
	}

	// An endpoint presenting another SPIFFE ID than configured is refused.
	cfg.EndpointID = GatewayID(ca.TrustDomain())
	if err := bootstrap.Set(b); err != nil {
		t.Fatal(err)
	}
	if _, err := newFetcher(t, cfg).Fetch(t.Context()); !errors.Is(err, ErrPeerRejected) {
		t.Errorf("wrong endpoint ID: %v, want ErrPeerRejected", err)
	}
}

func TestBundleEndpointAttacks(t *testing.T) {
	aCA, _ := newTestCA(t, "a.test")
	bCA, _ := newTestCA(t, "b.test")
	web := newWebPKI(t)
	webTLS := &tls.Config{Certificates: []tls.Certificate{web.server}}

	t.Run("endpoint serves another trust domain's bundle", func(t *testing.T) {
		// Configured for a.test, the endpoint serves b.test's bundle.
		srv := startEndpoint(t, BundleHandler(bCA.TrustDomain(), bCA), webTLS)
		cfg := fetcherConfig(t, "a.test", srv.URL, ProfileHTTPSWeb)
		cfg.WebPKIRoots = web.roots
		f := newFetcher(t, cfg)
		_, err := f.Fetch(t.Context())
		if !errors.Is(err, ErrTrustDomainMismatch) || !errors.Is(err, ErrInvalidBundle) {
			t.Fatalf("got %v, want ErrTrustDomainMismatch", err)
		}
		if f.Status().Bundle != nil {
			t.Error("the rejected bundle was kept")
		}
	})

	t.Run("profile downgrade from https_spiffe to a Web PKI certificate", func(t *testing.T) {
		srv := startEndpoint(t, BundleHandler(aCA.TrustDomain(), aCA), webTLS)
		bundles := NewBundleSet()
		b, _ := aCA.Bundle()
		_ = bundles.Set(b)
		cfg := fetcherConfig(t, "a.test", srv.URL, ProfileHTTPSSPIFFE)
		cfg.EndpointID = AgentID(aCA.TrustDomain())
		cfg.EndpointBundles = bundles
		_, err := newFetcher(t, cfg).Fetch(t.Context())
		if !errors.Is(err, ErrPeerRejected) {
			t.Fatalf("got %v, want ErrPeerRejected", err)
		}
		t.Logf("rejected: %v", err)
	})

	t.Run("Web PKI certificate carrying the expected SPIFFE ID", func(t *testing.T) {
		// A Web PKI CA that stamps a SPIFFE URI SAN does not make an
		// https_spiffe endpoint: the chain must lead to the SPIFFE bundle.
		leaf := forge(t, web.ca, func() certOpts {
			o := leafOpts(AgentID(aCA.TrustDomain()).String())
			o.ips = []net.IP{net.IPv4(127, 0, 0, 1)}
			return o
		}())
		srv := startEndpoint(t, BundleHandler(aCA.TrustDomain(), aCA), &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.cert.Raw}, PrivateKey: leaf.key}}})
		bundles := NewBundleSet()
		b, _ := aCA.Bundle()
		_ = bundles.Set(b)
		cfg := fetcherConfig(t, "a.test", srv.URL, ProfileHTTPSSPIFFE)
		cfg.EndpointID = AgentID(aCA.TrustDomain())
		cfg.EndpointBundles = bundles
		if _, err := newFetcher(t, cfg).Fetch(t.Context()); !errors.Is(err, ErrPeerRejected) {
			t.Fatalf("got %v, want ErrPeerRejected", err)
		}
	})

	t.Run("redirects are not followed", func(t *testing.T) {
		var hits atomic.Int32
		target := startEndpoint(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			BundleHandler(aCA.TrustDomain(), aCA).ServeHTTP(w, r)
		}), webTLS)
		srv := startEndpoint(t, http.RedirectHandler(target.URL, http.StatusFound), webTLS)
		cfg := fetcherConfig(t, "a.test", srv.URL, ProfileHTTPSWeb)
		cfg.WebPKIRoots = web.roots
		f := newFetcher(t, cfg)
		if _, err := f.Fetch(t.Context()); !errors.Is(err, ErrRedirect) {
			t.Fatalf("got %v, want ErrRedirect", err)
		}
		if hits.Load() != 0 {
			t.Error("the redirect was followed")
		}
		if f.Config().URL != srv.URL {
			t.Error("the redirect target was persisted")
		}
	})

	t.Run("error status and oversized documents", func(t *testing.T) {
		for name, h := range map[string]http.HandlerFunc{
			"500": func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", 500) },
			"oversize": func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write([]byte(strings.Repeat(" ", MaxBundleDocument+1)))
			},
		} {
			srv := startEndpoint(t, h, webTLS)
			cfg := fetcherConfig(t, "a.test", srv.URL, ProfileHTTPSWeb)
			cfg.WebPKIRoots = web.roots
			if _, err := newFetcher(t, cfg).Fetch(t.Context()); !errors.Is(err, ErrBundleEndpoint) {
				t.Errorf("%s: got %v, want ErrBundleEndpoint", name, err)
			}
		}
	})

	t.Run("garbage document", func(t *testing.T) {
		srv := startEndpoint(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"keys":[]}`)) }), webTLS)
		cfg := fetcherConfig(t, "a.test", srv.URL, ProfileHTTPSWeb)
		cfg.WebPKIRoots = web.roots
		if _, err := newFetcher(t, cfg).Fetch(t.Context()); !errors.Is(err, ErrInvalidBundle) {
			t.Errorf("got %v, want ErrInvalidBundle", err)
		}
	})
}

// rotatingSource serves a bundle that the test can replace.
type rotatingSource struct {
	mu sync.Mutex
	b  *spiffebundle.Bundle
}

func (s *rotatingSource) set(b *spiffebundle.Bundle) {
	s.mu.Lock()
	s.b = b
	s.mu.Unlock()
}

func (s *rotatingSource) GetBundleForTrustDomain(spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Clone(), nil
}

func TestFetcherRunRefreshesByHint(t *testing.T) {
	web := newWebPKI(t)
	src := &rotatingSource{}
	b1 := bundleOf(t, "a.test", forgeCA(t, nil, "a.test"))
	b1.SetRefreshHint(time.Second)
	b1.SetSequenceNumber(1)
	src.set(b1)
	var mu sync.Mutex
	var reqs []time.Time
	srv := startEndpoint(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reqs = append(reqs, time.Now())
		mu.Unlock()
		BundleHandler(td(t, "a.test"), src).ServeHTTP(w, r)
	}), &tls.Config{Certificates: []tls.Certificate{web.server}})
	cfg := fetcherConfig(t, "a.test", srv.URL, ProfileHTTPSWeb)
	cfg.WebPKIRoots = web.roots
	cfg.MinRefresh = 10 * time.Millisecond
	f := newFetcher(t, cfg)

	updates := make(chan *spiffebundle.Bundle, 10)
	set := NewBundleSet()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() {
		done <- f.Run(ctx, func(b *spiffebundle.Bundle) error {
			if err := set.Set(b); err != nil {
				return err
			}
			updates <- b
			return nil
		})
	}()
	first := <-updates
	if seq, _ := first.SequenceNumber(); seq != 1 {
		t.Fatalf("first update seq %d", seq)
	}
	b2 := bundleOf(t, "a.test", forgeCA(t, nil, "a.test"))
	b2.SetRefreshHint(time.Second)
	b2.SetSequenceNumber(2)
	src.set(b2)
	select {
	case second := <-updates:
		if seq, _ := second.SequenceNumber(); seq != 2 {
			t.Errorf("second update seq %d", seq)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no refresh within 5s with a 1s refresh hint")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(reqs); i++ {
		if gap := reqs[i].Sub(reqs[i-1]); gap < 900*time.Millisecond {
			t.Errorf("fetch %d came %v after the previous one, before the 1s refresh hint", i, gap)
		}
	}
	if got, _ := set.Get(td(t, "a.test")); !got.Equal(b2) {
		t.Error("the set does not hold the refreshed bundle")
	}
}

func TestFetcherRefreshInterval(t *testing.T) {
	cfg := fetcherConfig(t, "a.test", "https://example.test/b", ProfileHTTPSWeb)
	f := newFetcher(t, cfg)
	b := spiffebundle.New(td(t, "a.test"))
	if got := f.RefreshInterval(b); got != cfg.DefaultRefresh {
		t.Errorf("no hint: %v", got)
	}
	for hint, want := range map[time.Duration]time.Duration{time.Second: cfg.MinRefresh, time.Minute: time.Minute, 48 * time.Hour: cfg.MaxRefresh} {
		b.SetRefreshHint(hint)
		if got := f.RefreshInterval(b); got != want {
			t.Errorf("hint %v: %v, want %v", hint, got, want)
		}
	}
}

func TestFetcherConfigValidate(t *testing.T) {
	ok := fetcherConfig(t, "a.test", "https://spire.example:8443/bundle", ProfileHTTPSSPIFFE)
	ok.EndpointID = spiffeid.RequireFromString("spiffe://a.test/spire/server")
	ok.EndpointBundles = NewBundleSet()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for field, mutate := range map[string]func(*FetcherConfig){
		"trust_domain":       func(c *FetcherConfig) { c.TrustDomain = spiffeid.TrustDomain{} },
		"url":                func(c *FetcherConfig) { c.URL = "http://spire.example/bundle" },
		"profile":            func(c *FetcherConfig) { c.Profile = 0 },
		"endpoint_spiffe_id": func(c *FetcherConfig) { c.EndpointID = spiffeid.ID{} },
		"endpoint_bundles":   func(c *FetcherConfig) { c.EndpointBundles = nil },
		"web_pki_roots":      func(c *FetcherConfig) { c.WebPKIRoots = x509.NewCertPool() },
		"max_refresh":        func(c *FetcherConfig) { c.MaxRefresh = time.Millisecond },
		"timeout":            func(c *FetcherConfig) { c.Timeout = 0 },
	} {
		c := ok
		mutate(&c)
		err := c.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v", field, err)
		}
	}
	web := ok
	web.Profile = ProfileHTTPSWeb
	web.EndpointBundles = nil
	if err := web.Validate(); err == nil || !strings.Contains(err.Error(), "endpoint_spiffe_id") {
		t.Errorf("https_web with an endpoint ID: %v", err)
	}
	for s, want := range map[string]Profile{"https_web": ProfileHTTPSWeb, "https_spiffe": ProfileHTTPSSPIFFE} {
		if p, err := ParseProfile(s); err != nil || p != want || p.String() != s {
			t.Errorf("ParseProfile(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParseProfile("https"); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("ParseProfile(https) = %v", err)
	}
}

func TestBundleHandlers(t *testing.T) {
	ca, _ := newTestCA(t, "a.test")
	set := NewBundleSet()
	b, _ := ca.Bundle()
	_ = set.Set(b)
	mux := http.NewServeMux()
	mux.Handle("/bundles/{trust_domain}", BundleSetHandler(set))
	mux.Handle("/own", BundleHandler(ca.TrustDomain(), ca))
	mux.Handle("/other", BundleHandler(td(t, "b.test"), ca))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/bundles/a.test", 200},
		{"HEAD", "/bundles/a.test", 200},
		{"GET", "/own", 200},
		{"GET", "/bundles/b.test", 404},
		{"GET", "/bundles/A.test", 404},
		{"GET", "/other", 404},
		{"POST", "/own", 405},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s %s = %d, want %d", c.method, c.path, resp.StatusCode, c.status)
			continue
		}
		if c.status == 200 && c.method == "GET" {
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			got, err := ParseBundleDocument(ca.TrustDomain(), body)
			if err != nil || !got.Equal(b) {
				t.Errorf("%s: served document does not parse back to the bundle: %v", c.path, err)
			}
		}
	}
}
