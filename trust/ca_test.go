package trust

import (
	"crypto/rand"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// newTestCA returns a CA over a fresh RootAuthority for trust domain name.
func newTestCA(t testing.TB, name string) (*CA, *RootAuthority) {
	t.Helper()
	a := newRootAuthority(t, testRootConfig(t, name, nil), newMemStore(t))
	ca, err := NewCA(a, DefaultCAConfig())
	if err != nil {
		t.Fatal(err)
	}
	return ca, a
}

// checkLeaf asserts the X509-SVID leaf profile every CA must issue.
func checkLeaf(t *testing.T, leaf *x509.Certificate, id spiffeid.ID, ttl time.Duration, now time.Time) {
	t.Helper()
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Errorf("URI SANs = %v, want exactly [%s]", leaf.URIs, id)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Errorf("IsCA = %v, BasicConstraintsValid = %v", leaf.IsCA, leaf.BasicConstraintsValid)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %v, want digitalSignature only", leaf.KeyUsage)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ExtKeyUsage = %v", leaf.ExtKeyUsage)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("unexpected SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if got := leaf.NotAfter.Sub(now); got != ttl.Truncate(time.Second) && got != ttl {
		t.Errorf("lifetime from now = %v, want %v", got, ttl)
	}
}

func TestCAIssuesSVIDProfile(t *testing.T) {
	clk := newFakeClock(t)
	a := newRootAuthority(t, testRootConfig(t, "west.test", clk), newMemStore(t))
	ca, err := NewCA(a, testCAConfig(clk))
	if err != nil {
		t.Fatal(err)
	}
	if ca.TrustDomain().Name() != "west.test" {
		t.Errorf("TrustDomain = %v", ca.TrustDomain())
	}
	wl, err := WorkloadID(ca.TrustDomain(), "shop", "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []spiffeid.ID{wl, GatewayID(ca.TrustDomain()), AgentID(ca.TrustDomain())} {
		svid, err := ca.IssueX509SVID(id)
		if err != nil {
			t.Fatal(err)
		}
		if len(svid.Certificates) != 1 {
			t.Errorf("root-signed SVID has %d certificates, want 1", len(svid.Certificates))
		}
		checkLeaf(t, svid.Certificates[0], id, DefaultSVIDTTL, clk.Now())
		// go-spiffe's own parser accepts it.
		certPEM, keyPEM, err := svid.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := x509svid.Parse(certPEM, keyPEM); err != nil {
			t.Errorf("x509svid.Parse rejects an issued SVID: %v", err)
		}
		if _, _, err := x509svid.Verify(svid.Certificates, ca, x509svid.WithTime(clk.Now())); err != nil {
			t.Errorf("issued SVID does not verify against the CA's bundle: %v", err)
		}
	}
}

func TestCARefusesForeignAndOffSchemeIDs(t *testing.T) {
	ca, _ := newTestCA(t, "west.test")
	for _, s := range []string{
		"spiffe://east.test/meshfed/gateway",
		"spiffe://west.test/admin",
		"spiffe://west.test/meshfed/gateway/x",
	} {
		if _, err := ca.IssueX509SVID(spiffeid.RequireFromString(s)); !errors.Is(err, ErrInvalidID) {
			t.Errorf("IssueX509SVID(%s) = %v, want ErrInvalidID", s, err)
		}
	}
}

func TestCASignCSR(t *testing.T) {
	ca, _ := newTestCA(t, "west.test")
	key := newKey(t)
	// The request asks for a DNS name; the CA must ignore it.
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"evil.example"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	id := GatewayID(ca.TrustDomain())
	certs, err := ca.SignCSR(csr, id)
	if err != nil {
		t.Fatal(err)
	}
	checkLeaf(t, certs[0], id, DefaultSVIDTTL, certs[0].NotBefore.Add(DefaultBackdate))
	if !keyMatches(key, certs[0]) {
		t.Error("leaf is not for the CSR's key")
	}
	csr[len(csr)-1] ^= 1
	if _, err := ca.SignCSR(csr, id); err == nil {
		t.Error("SignCSR accepted a CSR with a bad signature")
	}
}

func TestCAConfig(t *testing.T) {
	_, a := newTestCA(t, "west.test")
	cfg := DefaultCAConfig()
	cfg.SVIDTTL = 2 * time.Hour
	if _, err := NewCA(a, cfg); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "max_svid_ttl") {
		t.Errorf("SVIDTTL above the authority's max: %v", err)
	}
	if _, err := NewCA(nil, DefaultCAConfig()); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil authority: %v", err)
	}
	for field, mutate := range map[string]func(*CAConfig){
		"svid_ttl": func(c *CAConfig) { c.SVIDTTL = 0 },
		"backdate": func(c *CAConfig) { c.Backdate = 2 * time.Hour },
		"clock":    func(c *CAConfig) { c.Clock = nil },
	} {
		c := DefaultCAConfig()
		mutate(&c)
		var ce *ConfigError
		if err := c.Validate(); !errors.As(err, &ce) || ce.Field != field {
			t.Errorf("%s: %v", field, err)
		}
	}
}

func TestSignLeafRefusesNonLeafTemplates(t *testing.T) {
	clk := newFakeClock(t)
	a := newRootAuthority(t, testRootConfig(t, "west.test", clk), newMemStore(t))
	key := newKey(t)
	base := func() *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: nextSerial(),
			NotBefore:    clk.Now(), NotAfter: clk.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature,
			URIs:     []*urlURL{GatewayID(a.TrustDomain()).URL()},
		}
	}
	for name, mutate := range map[string]func(*x509.Certificate){
		"CA":           func(c *x509.Certificate) { c.IsCA, c.BasicConstraintsValid = true, true },
		"keyCertSign":  func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign },
		"two URIs":     func(c *x509.Certificate) { c.URIs = append(c.URIs, AgentID(a.TrustDomain()).URL()) },
		"no URI":       func(c *x509.Certificate) { c.URIs = nil },
		"other domain": func(c *x509.Certificate) { c.URIs = []*urlURL{GatewayID(td(t, "east.test")).URL()} },
		"too long":     func(c *x509.Certificate) { c.NotAfter = clk.Now().Add(2 * time.Hour) },
	} {
		tmpl := base()
		mutate(tmpl)
		if _, err := a.SignX509SVID(tmpl, key.Public()); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
}
