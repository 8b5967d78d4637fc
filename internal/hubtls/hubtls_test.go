package hubtls

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/pki"
)

func newCA(t *testing.T, td string) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(td, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// chain issues a leaf for id from ca and returns it with the CA, as a hub
// server presents it.
func chain(t *testing.T, ca *pki.CA, id string, server, client bool) [][]byte {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Sign(key.Public(), pki.LeafOptions{SPIFFEID: id, TTL: time.Hour, Now: time.Now(), Server: server, Client: client})
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{leaf.Raw, ca.Cert.Raw}
}

// Only a hub server of the expected trust domain, chained to the hub CA
// and for server authentication, passes; the hub's bundle endpoint
// identity, which every server also holds, is not a hub server.
func TestVerifyServerAcceptsOnlyAHubServerOfTheTrustDomain(t *testing.T) {
	ca, other := newCA(t, "hub.meshfed"), newCA(t, "hub.meshfed")
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if err := VerifyServer(chain(t, ca, "spiffe://hub.meshfed/server/s0", true, true), roots, "hub.meshfed"); err != nil {
		t.Fatalf("a hub server: %v", err)
	}
	for name, raw := range map[string][][]byte{
		"nothing":             nil,
		"bundle endpoint":     chain(t, ca, "spiffe://hub.meshfed/bundle-endpoint", true, false),
		"admin":               chain(t, ca, "spiffe://hub.meshfed/admin/s0", false, true),
		"cluster agent":       chain(t, ca, "spiffe://hub.meshfed/cluster/east", false, true),
		"other trust domain":  chain(t, newCA(t, "evil.example"), "spiffe://evil.example/server/s0", true, true),
		"server of other CA":  chain(t, other, "spiffe://hub.meshfed/server/s0", true, true),
		"client-only server":  chain(t, ca, "spiffe://hub.meshfed/server/s0", false, true),
		"garbage certificate": {[]byte("not DER")},
	} {
		if err := VerifyServer(raw, roots, "hub.meshfed"); !errors.Is(err, ErrNotHubServer) {
			t.Errorf("%s: %v, want ErrNotHubServer", name, err)
		}
	}
}

// A pinned config accepts a hub server whose chain carries the CA with the
// pinned fingerprint, and nothing else.
func TestPinnedConfigAcceptsOnlyTheCAItPins(t *testing.T) {
	ca, other := newCA(t, "hub.meshfed"), newCA(t, "hub.meshfed")
	verify := PinnedConfig(pki.Fingerprint(ca.Cert)).VerifyPeerCertificate
	if err := verify(chain(t, ca, "spiffe://hub.meshfed/server/s0", true, true), nil); err != nil {
		t.Fatalf("the pinned hub: %v", err)
	}
	leafOnly := chain(t, ca, "spiffe://hub.meshfed/server/s0", true, true)[:1]
	for name, raw := range map[string][][]byte{
		"nothing":         nil,
		"leaf without CA": leafOnly,
		"another CA":      chain(t, other, "spiffe://hub.meshfed/server/s0", true, true),
		"bundle endpoint": chain(t, ca, "spiffe://hub.meshfed/bundle-endpoint", true, false),
	} {
		if err := verify(raw, nil); !errors.Is(err, ErrNotHubServer) {
			t.Errorf("%s: %v, want ErrNotHubServer", name, err)
		}
	}
}
