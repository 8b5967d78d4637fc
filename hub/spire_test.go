package hub

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/pki"
	"github.com/meshfed/meshfed/internal/spiretest"
)

func pemCerts(t *testing.T, certs ...*x509.Certificate) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// TestSPIREInterop federates meshfed with a real SPIRE server in both
// directions: the hub consumes SPIRE's bundle from its bundle endpoint, and
// SPIRE consumes a member cluster's bundle from the hub's.
func TestSPIREInterop(t *testing.T) {
	var bundlePort int
	h := newTestHub(t, 1, func(c *Config) {
		bundlePort = freePorts(t, 1)[0]
		c.BundlePort = bundlePort
	})
	admin := h.Admin()
	joinCluster(t, admin, "east")
	east, err := bundleFor(t, admin, "east.meshfed.local")
	if err != nil {
		t.Fatal(err)
	}
	hubCA, _, _ := h.Server(0).certs.current()

	spire := spiretest.Start(t, "spire.example", "")

	t.Run("hub consumes SPIRE's bundle", func(t *testing.T) {
		out, err := spire.Run("bundle", "show", "-format", "pem")
		if err != nil {
			t.Fatal(err)
		}
		roots, err := pki.ParseCertsPEM(out)
		if err != nil {
			t.Fatal(err)
		}
		rel := &fedv1.FederationRelationship{
			TrustDomain: "spire.example", Url: spire.BundleURL, Profile: ProfileHTTPSSPIFFE,
			EndpointSpiffeId: "spiffe://spire.example/spire/server",
		}
		for _, r := range roots {
			rel.EndpointBootstrapAuthorities = append(rel.EndpointBootstrapAuthorities, r.Raw)
		}
		if _, err := admin.PutFederation(ctxT(t, 10*time.Second), &fedv1.PutFederationRequest{Federation: rel}); err != nil {
			t.Fatal(err)
		}
		var got *fedv1.BundleInfo
		waitFor(t, 30*time.Second, "SPIRE's bundle at the hub", func() error {
			got, err = bundleFor(t, admin, "spire.example")
			if err != nil {
				return fmt.Errorf("%v (fetch status: %s)", err, fetchStatusOf(t, admin, "spire.example"))
			}
			return nil
		})
		if !mustCert(t, got.GetBundle().GetX509Authorities()[0]).Equal(roots[0]) {
			t.Fatal("the hub stored a different root than SPIRE's")
		}
	})

	t.Run("SPIRE consumes a cluster's bundle from the hub", func(t *testing.T) {
		// SPIRE authenticates the hub's endpoint by its SPIFFE ID, so it
		// needs the hub's trust domain bundle first.
		hubPEM := filepath.Join(spire.Dir(), "hub.pem")
		if err := os.WriteFile(hubPEM, pemCerts(t, hubCA.Cert), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := spire.Run("bundle", "set", "-format", "pem", "-id", "spiffe://hub.meshfed", "-path", hubPEM); err != nil {
			t.Fatal(err)
		}
		if _, err := spire.Run("federation", "create", "-trustDomain", "east.meshfed.local",
			"-bundleEndpointURL", fmt.Sprintf("https://127.0.0.1:%d/east.meshfed.local", bundlePort),
			"-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", "spiffe://hub.meshfed/server/s0"); err != nil {
			t.Fatal(err)
		}
		if _, err := spire.Run("federation", "refresh", "-id", "east.meshfed.local"); err != nil {
			t.Fatal(err)
		}
		want := pemCerts(t, mustCert(t, east.GetBundle().GetX509Authorities()[0]))
		waitFor(t, 60*time.Second, "east's bundle in SPIRE", func() error {
			out, err := spire.Run("bundle", "list", "-format", "pem", "-id", "spiffe://east.meshfed.local")
			if err != nil {
				return err
			}
			if !bytes.Contains(out, bytes.TrimSpace(want)) {
				return fmt.Errorf("SPIRE has %q", strings.TrimSpace(string(out)))
			}
			return nil
		})
	})
}
