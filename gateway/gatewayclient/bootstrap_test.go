package gatewayclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/federation"
)

func testBundle(t testing.TB) *spiffebundle.Bundle {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("east.meshfed.local")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "east root"}, NotBefore: time.Now().Add(-time.Minute),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs: []*url.URL{td.ID().URL()}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	b := spiffebundle.New(td)
	b.AddX509Authority(cert)
	b.SetRefreshHint(time.Minute)
	return b
}

const testToken = "0123456789abcdef0123456789abcdef-token"

func TestBootstrapRoundTrip(t *testing.T) {
	b := testBundle(t)
	doc, err := EncodeBootstrap("east", testToken, b)
	if err != nil {
		t.Fatal(err)
	}
	boot, got, err := ParseBootstrap(doc)
	if err != nil {
		t.Fatal(err)
	}
	if boot.Cluster != "east" || boot.Token != testToken || boot.TrustDomain != "east.meshfed.local" || !got.Equal(b) {
		t.Fatalf("parsed %+v, bundle equal %v", boot, got.Equal(b))
	}
}

func TestParseBootstrapNamesTheField(t *testing.T) {
	doc, err := EncodeBootstrap("east", testToken, testBundle(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, doc, field string
	}{
		{"short token", strings.Replace(string(doc), testToken, "short", 1), "token"},
		{"bad trust domain", strings.Replace(string(doc), `"trustDomain": "east.meshfed.local"`, `"trustDomain": "EAST!"`, 1), "trustDomain"},
		{"bundle of another trust domain", strings.Replace(string(doc), `"trustDomain": "east.meshfed.local"`, `"trustDomain": "west.meshfed.local"`, 1), "bundle"},
		{"bad cluster", strings.Replace(string(doc), `"cluster": "east"`, `"cluster": "East_1"`, 1), "cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseBootstrap([]byte(tc.doc))
			var fe *federation.FieldError
			if !errors.As(err, &fe) || !strings.Contains(fe.Field, tc.field) {
				t.Fatalf("ParseBootstrap: %v, want a FieldError naming %q", err, tc.field)
			}
		})
	}
	if _, _, err := ParseBootstrap([]byte(`{"cluster":"east","extra":1}`)); err == nil {
		t.Error("unknown field accepted")
	}
	if _, _, err := ParseBootstrap(make([]byte, MaxBootstrapBytes+1)); err == nil {
		t.Error("oversized document accepted")
	}
}

func FuzzParseBootstrap(f *testing.F) {
	doc, err := EncodeBootstrap("east", testToken, testBundle(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(doc)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"cluster":"east","trustDomain":"east.meshfed.local","token":"x","bundle":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		boot, b, err := ParseBootstrap(data)
		if err != nil {
			return
		}
		// Whatever parses names a valid cluster and its own trust domain,
		// and encodes back to a document that parses the same.
		if b.TrustDomain().String() != boot.TrustDomain || len(boot.Token) < minTokenLength {
			t.Fatalf("parsed %+v with bundle of %s", boot, b.TrustDomain())
		}
		again, err := EncodeBootstrap(boot.Cluster, boot.Token, b)
		if err != nil {
			t.Fatal(err)
		}
		if _, b2, err := ParseBootstrap(again); err != nil || !b2.Equal(b) {
			t.Fatalf("re-encoded document: %v", err)
		}
	})
}
