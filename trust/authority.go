package trust

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Authority is a CA's key source: the one interface behind which a cluster's
// signing material lives. A CA builds every leaf template itself (identity,
// lifetime, key usages) and asks its Authority only to sign it and to say
// which roots relying parties must trust. Three implementations ship with
// this package:
//
//   - *RootAuthority: a self-generated root, persisted through a Store and
//     rotated with overlap;
//   - *IntermediateAuthority: an operator-provided intermediate CA (for
//     example from cert-manager or a corporate PKI);
//   - *WorkloadAPIAuthority: an existing SPIRE deployment reached through
//     the SPIFFE Workload API. It does not sign (SignX509SVID returns
//     ErrCannotSign); it hands out the SVIDs SPIRE issued through the
//     optional FetchX509SVID method, which CA.IssueX509SVID uses.
//
// Implementations are safe for concurrent use.
type Authority interface {
	// Bundle returns a copy of the trust domain's current bundle: the X.509
	// authorities relying parties must trust now, a refresh hint, and a
	// sequence number that increases whenever the authorities change. The
	// caller owns the returned bundle.
	Bundle() (*spiffebundle.Bundle, error)

	// SignX509SVID signs tmpl, a leaf template built by a CA, for pub with
	// the certificate that issues now. It returns the leaf followed by the
	// intermediates up to, but excluding, the root, ready to present in a
	// TLS handshake. An implementation may shorten the leaf's NotAfter to
	// its issuing certificate's, and refuses templates that are not
	// X509-SVID leaves of its trust domain or outlive its maximum SVID TTL.
	// It does not modify tmpl.
	SignX509SVID(tmpl *x509.Certificate, pub crypto.PublicKey) ([]*x509.Certificate, error)

	// Watch returns a channel that receives (coalesced) after the bundle or
	// the authority's SVIDs change, and a function that stops the watch.
	Watch() (<-chan struct{}, func())
}

// svidFetcher is implemented by authorities that hand out SVIDs issued
// elsewhere instead of signing (WorkloadAPIAuthority). CA.IssueX509SVID uses
// it when present.
type svidFetcher interface {
	FetchX509SVID(id spiffeid.ID) (*x509svid.SVID, error)
}

// maxTTLer is implemented by signing authorities that bound the lifetime of
// the SVIDs they sign; NewCA checks its SVIDTTL against it.
type maxTTLer interface {
	MaxSVIDTTL() time.Duration
}

// Compile-time checks that the three key sources implement Authority.
var (
	_ Authority   = (*RootAuthority)(nil)
	_ Authority   = (*IntermediateAuthority)(nil)
	_ Authority   = (*WorkloadAPIAuthority)(nil)
	_ maxTTLer    = (*RootAuthority)(nil)
	_ maxTTLer    = (*IntermediateAuthority)(nil)
	_ svidFetcher = (*WorkloadAPIAuthority)(nil)
)

// signLeaf checks that tmpl is an X509-SVID leaf of td living at most
// maxTTL from now, caps its NotAfter at the issuer's, and signs it with key.
// It returns the leaf followed by chain.
func signLeaf(tmpl *x509.Certificate, pub crypto.PublicKey, td spiffeid.TrustDomain, maxTTL time.Duration, now time.Time,
	issuer *x509.Certificate, key crypto.Signer, chain []*x509.Certificate) ([]*x509.Certificate, error) {
	if tmpl == nil || pub == nil {
		return nil, fmt.Errorf("trust: sign: template and public key are required")
	}
	if tmpl.IsCA || tmpl.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		return nil, fmt.Errorf("trust: sign: template is a CA or has a signing key usage; only leaves are signed")
	}
	if len(tmpl.URIs) != 1 {
		return nil, fmt.Errorf("trust: sign: template has %d URI SANs, want exactly 1", len(tmpl.URIs))
	}
	id, err := spiffeid.FromURI(tmpl.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("trust: sign: URI SAN: %w", err)
	}
	if id.TrustDomain() != td {
		return nil, fmt.Errorf("%w: sign: %s is not in trust domain %s", ErrTrustDomainMismatch, id, td)
	}
	if id.Path() == "" {
		return nil, fmt.Errorf("trust: sign: %s has no path; a leaf SVID needs one", id)
	}
	if ttl := tmpl.NotAfter.Sub(now); ttl > maxTTL {
		return nil, fmt.Errorf("trust: sign: lifetime %v exceeds max_svid_ttl %v", ttl.Round(time.Second), maxTTL)
	}
	if now.Before(issuer.NotBefore) || !now.Before(issuer.NotAfter) {
		return nil, fmt.Errorf("%w: %s valid %s to %s", ErrAuthorityExpired, issuer.Subject, issuer.NotBefore.UTC().Format(time.RFC3339), issuer.NotAfter.UTC().Format(time.RFC3339))
	}
	t := *tmpl
	if t.NotAfter.After(issuer.NotAfter) {
		t.NotAfter = issuer.NotAfter
	}
	if t.NotBefore.Before(issuer.NotBefore) {
		t.NotBefore = issuer.NotBefore
	}
	der, err := x509.CreateCertificate(rand.Reader, &t, issuer, pub, key)
	if err != nil {
		return nil, fmt.Errorf("trust: sign: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("trust: sign: parse: %w", err)
	}
	out := make([]*x509.Certificate, 0, 1+len(chain))
	out = append(out, leaf)
	return append(out, chain...), nil
}

// newSerial returns a random positive 127-bit serial number.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("trust: serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// newRoot generates a self-signed ECDSA P-256 root CA for td, valid from
// now-skew for ttl. Its only URI SAN is the trust domain's ID, and it may
// sign only leaves (path length 0).
func newRoot(td spiffeid.TrustDomain, ttl, skew time.Duration, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("trust: generate root key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"meshfed"},
			CommonName:   "meshfed root " + td.Name(),
			SerialNumber: serial.Text(16),
		},
		NotBefore:             now.Add(-skew),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("trust: self-sign root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("trust: parse root: %w", err)
	}
	return cert, key, nil
}

// MaxBundleAuthorities bounds the X.509 authorities of one trust bundle.
const MaxBundleAuthorities = 64

// checkAuthorities validates the X.509 authorities of td's bundle: at least
// one, at most MaxBundleAuthorities, each a CA certificate, and none naming
// another trust domain in a SPIFFE URI SAN. Authorities without a SPIFFE
// URI SAN (for example a corporate root) cannot be attributed and are
// accepted.
func checkAuthorities(td spiffeid.TrustDomain, certs []*x509.Certificate) error {
	switch {
	case len(certs) == 0:
		return fmt.Errorf("%w: %s: no X.509 authorities", ErrInvalidBundle, td)
	case len(certs) > MaxBundleAuthorities:
		return fmt.Errorf("%w: %s: %d X.509 authorities, at most %d", ErrInvalidBundle, td, len(certs), MaxBundleAuthorities)
	}
	for i, c := range certs {
		if !c.BasicConstraintsValid || !c.IsCA {
			return fmt.Errorf("%w: %s: authority %d (%s) is not a CA certificate", ErrInvalidBundle, td, i, c.Subject)
		}
		if err := checkCATrustDomain(td, c); err != nil {
			return fmt.Errorf("%w: %s: authority %d: %w", ErrInvalidBundle, td, i, err)
		}
	}
	return nil
}

// checkCATrustDomain returns an error matching ErrTrustDomainMismatch if
// CA certificate c carries a SPIFFE URI SAN of a trust domain other than td.
func checkCATrustDomain(td spiffeid.TrustDomain, c *x509.Certificate) error {
	for _, u := range c.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		id, err := spiffeid.FromURI(u)
		if err != nil {
			return fmt.Errorf("%w: certificate %s has an invalid SPIFFE URI SAN %q", ErrTrustDomainMismatch, c.Subject, u)
		}
		if id.TrustDomain() != td {
			return fmt.Errorf("%w: certificate %s belongs to trust domain %s, not %s", ErrTrustDomainMismatch, c.Subject, id.TrustDomain(), td)
		}
	}
	return nil
}

// sameCerts reports whether a and b hold the same certificates in the same
// order.
func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Raw, b[i].Raw) {
			return false
		}
	}
	return true
}

// nextSequence returns the sequence number that follows prev for a bundle
// whose state is not persisted: prev+1, or the Unix time in seconds if that
// is larger, so numbers keep increasing across process restarts as long as
// the clock does.
func nextSequence(prev uint64, now time.Time) uint64 {
	if s := now.Unix(); s > 0 && uint64(s) > prev {
		return uint64(s)
	}
	return prev + 1
}
