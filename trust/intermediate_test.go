package trust

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// opPKI is an operator's PKI: a root and an intermediate for trust domain
// "west.test".
type opPKI struct {
	root, inter *testCert
}

func newOpPKI(t testing.TB) opPKI {
	t.Helper()
	root := forge(t, nil, certOpts{cn: "Corp Root", isCA: true, keyUsage: x509.KeyUsageCertSign, notAfter: time.Now().Add(24 * time.Hour)})
	inter := forge(t, root, certOpts{cn: "west intermediate", uris: []string{"spiffe://west.test"}, isCA: true, keyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, notAfter: time.Now().Add(90 * time.Minute)})
	return opPKI{root: root, inter: inter}
}

func intermediateConfig(t testing.TB, p opPKI) IntermediateConfig {
	t.Helper()
	cfg := DefaultIntermediateConfig()
	cfg.TrustDomain = td(t, "west.test")
	cfg.ChainPEM = pemOf(p.inter.cert, p.root.cert)
	cfg.KeyPEM = keyPEMOf(t, p.inter.key)
	return cfg
}

func TestIntermediateAuthority(t *testing.T) {
	p := newOpPKI(t)
	ecDER, err := x509.MarshalECPrivateKey(p.inter.key.(*ecdsaPrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	sec1 := append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})...)

	for name, mutate := range map[string]func(*IntermediateConfig){
		"chain ending in root, PKCS#8 key": func(*IntermediateConfig) {},
		"separate roots, SEC 1 key": func(c *IntermediateConfig) {
			c.ChainPEM = pemOf(p.inter.cert)
			c.RootsPEM = pemOf(p.root.cert)
			c.KeyPEM = sec1
		},
		"chain with root and roots": func(c *IntermediateConfig) { c.RootsPEM = pemOf(p.root.cert) },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := intermediateConfig(t, p)
			mutate(&cfg)
			a, err := NewIntermediateAuthority(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ca, err := NewCA(a, DefaultCAConfig())
			if err != nil {
				t.Fatal(err)
			}
			id := GatewayID(cfg.TrustDomain)
			svid, err := ca.IssueX509SVID(id)
			if err != nil {
				t.Fatal(err)
			}
			if len(svid.Certificates) != 2 || !svid.Certificates[1].Equal(p.inter.cert) {
				t.Fatalf("SVID chain = %d certificates, want leaf + intermediate", len(svid.Certificates))
			}
			// The leaf's lifetime is capped by the intermediate's (90m > 1h
			// here, so not capped) and the profile holds.
			checkLeaf(t, svid.Certificates[0], id, DefaultSVIDTTL, svid.Certificates[0].NotBefore.Add(DefaultBackdate))
			roots, _ := mustBundleRoots(t, a)
			if len(roots) != 1 || !roots[0].Equal(p.root.cert) {
				t.Fatalf("bundle = %d roots, want the operator's root", len(roots))
			}
			if _, _, err := x509svid.Verify(svid.Certificates, ca); err != nil {
				t.Errorf("SVID does not verify to the bundle: %v", err)
			}
		})
	}
}

func TestIntermediateRSAKey(t *testing.T) {
	root := forge(t, nil, certOpts{cn: "root", isCA: true, keyUsage: x509.KeyUsageCertSign})
	rsaKey, err := rsa.GenerateKey(randReader(), 2048)
	if err != nil {
		t.Fatal(err)
	}
	inter := forgeWithKey(t, root, rsaKey, certOpts{cn: "rsa inter", uris: []string{"spiffe://west.test"}, isCA: true, keyUsage: x509.KeyUsageCertSign})
	cfg := DefaultIntermediateConfig()
	cfg.TrustDomain = td(t, "west.test")
	cfg.ChainPEM = pemOf(inter.cert, root.cert)
	cfg.KeyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	a, err := NewIntermediateAuthority(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := NewCA(a, DefaultCAConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.IssueX509SVID(AgentID(cfg.TrustDomain)); err != nil {
		t.Fatal(err)
	}
}

func TestIntermediateRejects(t *testing.T) {
	p := newOpPKI(t)
	other := newOpPKI(t)
	notCA := forge(t, p.root, certOpts{cn: "not ca", uris: []string{"spiffe://west.test"}, keyUsage: x509.KeyUsageCertSign})
	noCertSign := forge(t, p.root, certOpts{cn: "no certsign", uris: []string{"spiffe://west.test"}, isCA: true, keyUsage: x509.KeyUsageDigitalSignature})
	east := forge(t, p.root, certOpts{cn: "east", uris: []string{"spiffe://east.test"}, isCA: true, keyUsage: x509.KeyUsageCertSign})
	noURI := forge(t, p.root, certOpts{cn: "no uri", isCA: true, keyUsage: x509.KeyUsageCertSign})
	twoURIs := forge(t, p.root, certOpts{cn: "two", uris: []string{"spiffe://west.test", "spiffe://west.test/x"}, isCA: true, keyUsage: x509.KeyUsageCertSign})
	expired := forge(t, p.root, certOpts{cn: "expired", uris: []string{"spiffe://west.test"}, isCA: true, keyUsage: x509.KeyUsageCertSign,
		notBefore: time.Now().Add(-2 * time.Hour), notAfter: time.Now().Add(-time.Hour)})

	cases := map[string]struct {
		mutate func(*IntermediateConfig)
		target error
	}{
		"not a CA": {func(c *IntermediateConfig) {
			c.ChainPEM, c.KeyPEM = pemOf(notCA.cert, p.root.cert), keyPEMOf(t, notCA.key)
		}, ErrInvalidAuthority},
		"no keyCertSign": {func(c *IntermediateConfig) {
			c.ChainPEM, c.KeyPEM = pemOf(noCertSign.cert, p.root.cert), keyPEMOf(t, noCertSign.key)
		}, ErrInvalidAuthority},
		"other trust domain": {func(c *IntermediateConfig) {
			c.ChainPEM, c.KeyPEM = pemOf(east.cert, p.root.cert), keyPEMOf(t, east.key)
		}, ErrTrustDomainMismatch},
		"no URI SAN": {func(c *IntermediateConfig) {
			c.ChainPEM, c.KeyPEM = pemOf(noURI.cert, p.root.cert), keyPEMOf(t, noURI.key)
		}, ErrInvalidAuthority},
		"two URI SANs": {func(c *IntermediateConfig) {
			c.ChainPEM, c.KeyPEM = pemOf(twoURIs.cert, p.root.cert), keyPEMOf(t, twoURIs.key)
		}, ErrInvalidAuthority},
		"expired": {func(c *IntermediateConfig) {
			c.ChainPEM, c.KeyPEM = pemOf(expired.cert, p.root.cert), keyPEMOf(t, expired.key)
		}, ErrAuthorityExpired},
		"key mismatch":       {func(c *IntermediateConfig) { c.KeyPEM = keyPEMOf(t, other.inter.key) }, ErrInvalidAuthority},
		"wrong root":         {func(c *IntermediateConfig) { c.ChainPEM, c.RootsPEM = pemOf(p.inter.cert), pemOf(other.root.cert) }, ErrInvalidAuthority},
		"chain order":        {func(c *IntermediateConfig) { c.ChainPEM = pemOf(p.inter.cert, other.root.cert) }, ErrInvalidAuthority},
		"no root anywhere":   {func(c *IntermediateConfig) { c.ChainPEM = pemOf(p.inter.cert) }, ErrInvalidAuthority},
		"junk after PEM":     {func(c *IntermediateConfig) { c.ChainPEM = append(c.ChainPEM, "junk"...) }, ErrInvalidAuthority},
		"key block in chain": {func(c *IntermediateConfig) { c.ChainPEM = append(c.ChainPEM, c.KeyPEM...) }, ErrInvalidAuthority},
		"encrypted key": {func(c *IntermediateConfig) {
			c.KeyPEM = pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}})
		}, ErrInvalidAuthority},
		"two keys": {func(c *IntermediateConfig) { c.KeyPEM = append(c.KeyPEM, keyPEMOf(t, p.inter.key)...) }, ErrInvalidAuthority},
		"no key":   {func(c *IntermediateConfig) { c.KeyPEM = []byte("\n") }, ErrInvalidAuthority},
		"missing":  {func(c *IntermediateConfig) { c.ChainPEM = nil }, ErrInvalidConfig},
	}
	for name, c := range cases {
		cfg := intermediateConfig(t, p)
		c.mutate(&cfg)
		_, err := NewIntermediateAuthority(cfg)
		if !errors.Is(err, c.target) {
			t.Errorf("%s: got %v, want %v", name, err, c.target)
		}
	}
}

func TestIntermediateUpdate(t *testing.T) {
	p := newOpPKI(t)
	cfg := intermediateConfig(t, p)
	a, err := NewIntermediateAuthority(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, seq0 := mustBundleRoots(t, a)
	ch, stop := a.Watch()
	defer stop()

	// A renewed intermediate under the same root: same bundle sequence.
	renewed := forge(t, p.root, certOpts{cn: "renewed", uris: []string{"spiffe://west.test"}, isCA: true, keyUsage: x509.KeyUsageCertSign})
	if err := a.Update(pemOf(renewed.cert, p.root.cert), keyPEMOf(t, renewed.key), nil); err != nil {
		t.Fatal(err)
	}
	<-ch
	if _, seq := mustBundleRoots(t, a); seq != seq0 {
		t.Errorf("sequence changed from %d to %d without a root change", seq0, seq)
	}
	// A new root: the sequence increases.
	q := newOpPKI(t)
	if err := a.Update(pemOf(q.inter.cert, q.root.cert), keyPEMOf(t, q.inter.key), nil); err != nil {
		t.Fatal(err)
	}
	<-ch
	roots, seq := mustBundleRoots(t, a)
	if seq <= seq0 || !roots[0].Equal(q.root.cert) {
		t.Errorf("after a root change: seq %d (was %d), root changed %v", seq, seq0, roots[0].Equal(q.root.cert))
	}
	// Bad material changes nothing.
	if err := a.Update([]byte("x"), nil, nil); !errors.Is(err, ErrInvalidAuthority) {
		t.Errorf("Update with junk: %v", err)
	}
	if roots2, _ := mustBundleRoots(t, a); !roots2[0].Equal(q.root.cert) {
		t.Error("a failed Update changed the bundle")
	}
}

func TestIntermediateCapsLeafLifetime(t *testing.T) {
	root := forge(t, nil, certOpts{cn: "root", isCA: true, keyUsage: x509.KeyUsageCertSign})
	inter := forge(t, root, certOpts{cn: "short", uris: []string{"spiffe://west.test"}, isCA: true, keyUsage: x509.KeyUsageCertSign, notAfter: time.Now().Add(10 * time.Minute)})
	cfg := DefaultIntermediateConfig()
	cfg.TrustDomain = td(t, "west.test")
	cfg.ChainPEM, cfg.KeyPEM = pemOf(inter.cert, root.cert), keyPEMOf(t, inter.key)
	a, err := NewIntermediateAuthority(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := NewCA(a, DefaultCAConfig())
	if err != nil {
		t.Fatal(err)
	}
	svid, err := ca.IssueX509SVID(GatewayID(cfg.TrustDomain))
	if err != nil {
		t.Fatal(err)
	}
	if got := svid.Certificates[0].NotAfter; got.After(inter.cert.NotAfter) {
		t.Errorf("leaf NotAfter %v outlives the intermediate's %v", got, inter.cert.NotAfter)
	}
}
