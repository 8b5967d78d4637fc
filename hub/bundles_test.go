package hub

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	spiffefed "github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/pki"
)

// externalEndpoint is a SPIFFE bundle endpoint of another trust domain, as a
// SPIRE server would run it: https_spiffe with its own SVID.
type externalEndpoint struct {
	td     string
	ca     *pki.CA
	url    string
	id     string
	served atomic.Pointer[spiffebundle.Bundle] // what it serves; tests may swap it
}

func newExternalEndpoint(t *testing.T, td string, webPKI bool) *externalEndpoint {
	t.Helper()
	ca, err := pki.NewCA(td, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e := &externalEndpoint{td: td, ca: ca, id: "spiffe://" + td + "/spire/server"}
	served := spiffebundle.New(spiffeid.RequireTrustDomainFromString(td))
	served.AddX509Authority(ca.Cert)
	served.SetRefreshHint(time.Second)
	served.SetSequenceNumber(5)
	e.served.Store(served)
	key, _ := pki.NewKey()
	opts := pki.LeafOptions{SPIFFEID: e.id, TTL: time.Hour, Now: time.Now(), Server: true, IPs: []net.IP{net.ParseIP("127.0.0.1")}}
	if webPKI {
		opts.SPIFFEID = "spiffe://webpki.invalid/not-used" // a WebPKI-style cert from an unrelated CA
		other, _ := pki.NewCA("webpki.invalid", time.Hour, time.Now())
		ca = other
	}
	leaf, err := ca.Sign(key.Public(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	h, err := spiffefed.NewHandler(spiffeid.RequireTrustDomainFromString(td), servedSource{e})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	e.url = "https://" + ln.Addr().String() + "/bundle"
	return e
}

type servedSource struct{ e *externalEndpoint }

func (s servedSource) GetBundleForTrustDomain(spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	return s.e.served.Load(), nil
}

func (e *externalEndpoint) relationship() *fedv1.FederationRelationship {
	return &fedv1.FederationRelationship{
		TrustDomain: e.td, Url: e.url, Profile: ProfileHTTPSSPIFFE, EndpointSpiffeId: e.id,
		EndpointBootstrapAuthorities: [][]byte{e.ca.Cert.Raw},
	}
}

func bundleFor(t *testing.T, admin fedv1.AdminClient, td string) (*fedv1.BundleInfo, error) {
	resp, err := admin.ListBundles(ctxT(t, 10*time.Second), &fedv1.ListBundlesRequest{})
	if err != nil {
		return nil, err
	}
	for _, b := range resp.GetBundles() {
		if b.GetBundle().GetTrustDomain() == td {
			return b, nil
		}
	}
	return nil, fmt.Errorf("no bundle for %s", td)
}

func fetchStatusOf(t *testing.T, admin fedv1.AdminClient, td string) string {
	resp, err := admin.ListFederations(ctxT(t, 10*time.Second), &fedv1.ListFederationsRequest{})
	if err != nil {
		return err.Error()
	}
	for _, f := range resp.GetFederations() {
		if f.GetFederation().GetTrustDomain() == td {
			return f.GetLastError()
		}
	}
	return "no such federation"
}

func TestHubServesBundleEndpoint(t *testing.T) {
	var bundlePort int
	h := newTestHub(t, 1, func(c *Config) {
		bundlePort = freePorts(t, 1)[0]
		c.BundlePort = bundlePort
	})
	admin := h.Admin()
	joinCluster(t, admin, "east")
	info, err := bundleFor(t, admin, "east.meshfed.local")
	if err != nil {
		t.Fatal(err)
	}
	// A SPIFFE federation client (here go-spiffe's, as SPIRE uses) fetches
	// it under https_spiffe, authenticating the hub by its bundle
	// endpoint SPIFFE ID.
	cfg := h.Server(0).certs
	ca, _, _ := cfg.current()
	hubTD := spiffeid.RequireTrustDomainFromString("hub.meshfed")
	roots := x509bundle.FromX509Authorities(hubTD, []*x509.Certificate{ca.Cert})
	got, err := spiffefed.FetchBundle(ctxT(t, 10*time.Second), spiffeid.RequireTrustDomainFromString("east.meshfed.local"),
		fmt.Sprintf("https://127.0.0.1:%d/east.meshfed.local", bundlePort),
		spiffefed.WithSPIFFEAuth(roots, spiffeid.RequireFromString(BundleEndpointSPIFFEID("hub.meshfed"))))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.X509Authorities()) != 1 || !got.X509Authorities()[0].Equal(mustCert(t, info.GetBundle().GetX509Authorities()[0])) {
		t.Fatalf("fetched bundle %v does not match the cluster's", got.X509Authorities())
	}
	// Unknown trust domains are 404, not someone else's bundle.
	_, err = spiffefed.FetchBundle(ctxT(t, 10*time.Second), spiffeid.RequireTrustDomainFromString("nosuch.example"),
		fmt.Sprintf("https://127.0.0.1:%d/nosuch.example", bundlePort),
		spiffefed.WithSPIFFEAuth(roots, spiffeid.RequireFromString(BundleEndpointSPIFFEID("hub.meshfed"))))
	if err == nil {
		t.Fatal("fetched a bundle for an unknown trust domain")
	}
}

func mustCert(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHubFederatesExternalTrustDomain(t *testing.T) {
	h := newTestHub(t, 3)
	admin := h.Admin()
	agent := joinCluster(t, admin, "east")
	st, err := agent.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	ext := newExternalEndpoint(t, "spire.example", false)
	if _, err := admin.PutFederation(ctxT(t, 10*time.Second), &fedv1.PutFederationRequest{Federation: ext.relationship()}); err != nil {
		t.Fatal(err)
	}
	var info *fedv1.BundleInfo
	waitFor(t, 20*time.Second, "external bundle fetched", func() error {
		info, err = bundleFor(t, admin, "spire.example")
		return err
	})
	if info.GetCluster() != "" || !mustCert(t, info.GetBundle().GetX509Authorities()[0]).Equal(ext.ca.Cert) {
		t.Fatalf("stored external bundle %v", info)
	}
	// Agents receive it with the rest of the federated set.
	if _, err := st.next(func(m *fedv1.SyncResponse) bool {
		for _, b := range m.GetDelta().GetBundles() {
			if b.GetTrustDomain() == "spire.example" {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	// Removing the relationship withdraws the bundle.
	if _, err := admin.DeleteFederation(ctxT(t, 10*time.Second), &fedv1.DeleteFederationRequest{TrustDomain: "spire.example"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bundleFor(t, admin, "spire.example"); err == nil {
		t.Fatal("bundle still present after the federation was removed")
	}
}

func TestHubRefusesBadBundleEndpoints(t *testing.T) {
	h := newTestHub(t, 1)
	admin := h.Admin()
	ctx := ctxT(t, 30*time.Second)
	joinCluster(t, admin, "east")

	t.Run("serves another trust domain's bundle", func(t *testing.T) {
		ext := newExternalEndpoint(t, "spire-a.example", false)
		other, _ := pki.NewCA("spire-b.example", time.Hour, time.Now())
		b := spiffebundle.New(spiffeid.RequireTrustDomainFromString("spire-a.example"))
		b.AddX509Authority(other.Cert)
		ext.served.Store(b)
		if _, err := admin.PutFederation(ctx, &fedv1.PutFederationRequest{Federation: ext.relationship()}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "fetch refused", func() error {
			if e := fetchStatusOf(t, admin, "spire-a.example"); e == "" {
				return errors.New("no fetch error yet")
			}
			return nil
		})
		if _, err := bundleFor(t, admin, "spire-a.example"); err == nil {
			t.Fatal("stored a bundle of another trust domain")
		}
	})
	t.Run("profile downgrade to a WebPKI certificate", func(t *testing.T) {
		ext := newExternalEndpoint(t, "spire-c.example", true)
		if _, err := admin.PutFederation(ctx, &fedv1.PutFederationRequest{Federation: ext.relationship()}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "fetch refused", func() error {
			if e := fetchStatusOf(t, admin, "spire-c.example"); e == "" {
				return errors.New("no fetch error yet")
			}
			return nil
		})
		if _, err := bundleFor(t, admin, "spire-c.example"); err == nil {
			t.Fatal("accepted a bundle from an endpoint without the configured SPIFFE ID")
		}
	})
	t.Run("a bundle whose sequence number goes back", func(t *testing.T) {
		ext := newExternalEndpoint(t, "spire-d.example", false)
		if _, err := admin.PutFederation(ctx, &fedv1.PutFederationRequest{Federation: ext.relationship()}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "first bundle fetched", func() error {
			_, err := bundleFor(t, admin, "spire-d.example")
			return err
		})
		// An older bundle (a replay, or a rolled-back server) with another
		// root: refused, and the stored bundle stays.
		other, _ := pki.NewCA("spire-d.example", time.Hour, time.Now())
		old := spiffebundle.New(spiffeid.RequireTrustDomainFromString("spire-d.example"))
		old.AddX509Authority(other.Cert)
		old.SetRefreshHint(time.Second)
		old.SetSequenceNumber(4)
		ext.served.Store(old)
		waitFor(t, 20*time.Second, "rollback refused", func() error {
			if e := fetchStatusOf(t, admin, "spire-d.example"); !strings.Contains(e, "sequence") {
				return fmt.Errorf("fetch status %q, want a sequence error", e)
			}
			return nil
		})
		info, err := bundleFor(t, admin, "spire-d.example")
		if err != nil || !mustCert(t, info.GetBundle().GetX509Authorities()[0]).Equal(ext.ca.Cert) || info.GetBundle().GetSequenceNumber() != 5 {
			t.Fatalf("stored bundle %v (%v), want the first one (sequence 5)", info, err)
		}
	})
	t.Run("relationships are explicit", func(t *testing.T) {
		for _, f := range []*fedv1.FederationRelationship{
			{TrustDomain: "x.example", Url: "https://127.0.0.1:1/b", Profile: ProfileHTTPSSPIFFE}, // no endpoint ID
			{TrustDomain: "x.example", Url: "http://127.0.0.1:1/b", Profile: ProfileHTTPSWeb},     // not https
			{TrustDomain: "x.example", Url: "https://127.0.0.1:1/b", Profile: "https"},            // unknown profile
			{TrustDomain: "east.meshfed.local", Url: "https://127.0.0.1:1/b", Profile: ProfileHTTPSWeb},
		} {
			_, err := admin.PutFederation(ctx, &fedv1.PutFederationRequest{Federation: f})
			if err == nil {
				t.Errorf("accepted %v", f)
			}
		}
	})
}

func TestRotateCAReachesTheCluster(t *testing.T) {
	h := newTestHub(t, 1)
	admin := h.Admin()
	agent := joinCluster(t, admin, "east")
	st, err := agent.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := admin.RotateCA(ctxT(t, 10*time.Second), &fedv1.RotateCARequest{Cluster: "east"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCaRotation() != 1 {
		t.Fatalf("ca_rotation = %d, want 1", resp.GetCaRotation())
	}
	if _, err := st.next(func(*fedv1.SyncResponse) bool { return st.clusters["east"].GetCaRotation() == 1 }); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RotateCA(ctxT(t, 10*time.Second), &fedv1.RotateCARequest{Cluster: "nosuch"}); err == nil {
		t.Fatal("rotated a non-member")
	}
}
