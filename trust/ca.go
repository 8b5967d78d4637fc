package trust

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// CAConfig configures a CA. Build it with DefaultCAConfig.
type CAConfig struct {
	// SVIDTTL is the lifetime of issued SVIDs. It must not exceed the
	// authority's MaxSVIDTTL.
	SVIDTTL time.Duration
	// Backdate is subtracted from each SVID's NotBefore, so peers whose
	// clocks lag accept it at once.
	Backdate time.Duration
	// Clock returns the current time.
	Clock func() time.Time
}

// DefaultBackdate is the default CAConfig.Backdate.
const DefaultBackdate = time.Minute

// DefaultCAConfig returns a CAConfig with every field set: one-hour SVIDs,
// backdated by a minute.
func DefaultCAConfig() CAConfig {
	return CAConfig{SVIDTTL: DefaultSVIDTTL, Backdate: DefaultBackdate, Clock: time.Now}
}

// Validate reports every invalid field at once.
func (c *CAConfig) Validate() error {
	var errs configErrors
	if c.SVIDTTL < MinSVIDTTL || c.SVIDTTL > MaxAllowedSVIDTTL {
		errs.add("svid_ttl", "%v must be in %v..%v", c.SVIDTTL, MinSVIDTTL, MaxAllowedSVIDTTL)
	}
	if c.Backdate < 0 || c.Backdate > MaxClockSkew {
		errs.add("backdate", "%v must be in 0s..%v", c.Backdate, MaxClockSkew)
	}
	if c.Clock == nil {
		errs.add("clock", "required")
	}
	return errs.err()
}

// CA is a cluster's certificate authority: it issues X509-SVIDs in
// meshfed's identity scheme for its trust domain from an Authority, and
// serves the trust domain's bundle. Every leaf it issues has exactly one
// URI SAN (the SPIFFE ID), is not a CA, has the digitalSignature key usage
// only (never keyCertSign or cRLSign), the serverAuth and clientAuth
// extended key usages, and lives SVIDTTL.
//
// CA is an X509SVIDIssuer (for SVIDSource) and a spiffebundle.Source and
// x509bundle.Source for its own trust domain (for a bundle endpoint). It is
// safe for concurrent use.
type CA struct {
	cfg  CAConfig
	auth Authority
	td   spiffeid.TrustDomain
}

var (
	_ X509SVIDIssuer      = (*CA)(nil)
	_ spiffebundle.Source = (*CA)(nil)
	_ x509bundle.Source   = (*CA)(nil)
)

// NewCA returns a CA over auth. It learns the trust domain from auth's
// bundle, and returns a *ConfigError if cfg is invalid or SVIDTTL exceeds
// the authority's MaxSVIDTTL.
func NewCA(auth Authority, cfg CAConfig) (*CA, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if auth == nil {
		return nil, &ConfigError{Field: "authority", Reason: "required"}
	}
	if m, ok := auth.(maxTTLer); ok && cfg.SVIDTTL > m.MaxSVIDTTL() {
		return nil, &ConfigError{Field: "svid_ttl", Reason: fmt.Sprintf("%v exceeds the authority's max_svid_ttl %v", cfg.SVIDTTL, m.MaxSVIDTTL())}
	}
	b, err := auth.Bundle()
	if err != nil {
		return nil, fmt.Errorf("trust: CA: authority bundle: %w", err)
	}
	return &CA{cfg: cfg, auth: auth, td: b.TrustDomain()}, nil
}

// TrustDomain returns the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// checkID checks that id is in the CA's trust domain and in meshfed's
// identity scheme.
func (ca *CA) checkID(id spiffeid.ID) error {
	if _, err := Classify(id); err != nil {
		return err
	}
	if !id.MemberOf(ca.td) {
		return &IDError{ID: id.String(), Reason: "not in the CA's trust domain " + ca.td.Name()}
	}
	return nil
}

// IssueX509SVID returns a new X509-SVID for id with a fresh ECDSA P-256
// key. With a WorkloadAPIAuthority it returns SPIRE's current SVID for id
// instead. It returns an *IDError if id is outside the CA's trust domain or
// meshfed's identity scheme.
func (ca *CA) IssueX509SVID(id spiffeid.ID) (*x509svid.SVID, error) {
	if err := ca.checkID(id); err != nil {
		return nil, err
	}
	if f, ok := ca.auth.(svidFetcher); ok {
		return f.FetchX509SVID(id)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("trust: generate SVID key: %w", err)
	}
	certs, err := ca.signChecked(id, key.Public())
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, nil
}

// SignX509SVID issues an X509-SVID for id and the caller's public key pub
// (whose private half never reaches the CA). It returns the leaf followed by
// any intermediates, excluding the root. With a WorkloadAPIAuthority it
// returns an error matching ErrCannotSign.
func (ca *CA) SignX509SVID(id spiffeid.ID, pub crypto.PublicKey) ([]*x509.Certificate, error) {
	if err := ca.checkID(id); err != nil {
		return nil, err
	}
	return ca.signChecked(id, pub)
}

// SignCSR checks the signature of a DER PKCS#10 request and issues an
// X509-SVID for id and the request's key. The identity comes from id, never
// from the request's subject or SANs.
func (ca *CA) SignCSR(csrDER []byte, id spiffeid.ID) ([]*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("trust: CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("trust: CSR signature: %w", err)
	}
	return ca.SignX509SVID(id, csr.PublicKey)
}

func (ca *CA) signChecked(id spiffeid.ID, pub crypto.PublicKey) ([]*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := ca.cfg.Clock()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshfed"}},
		NotBefore:             now.Add(-ca.cfg.Backdate),
		NotAfter:              now.Add(ca.cfg.SVIDTTL),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{id.URL()},
	}
	certs, err := ca.auth.SignX509SVID(tmpl, pub)
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, errors.New("trust: authority returned no certificate")
	}
	return certs, nil
}

// Bundle returns a copy of the trust domain's current bundle, with refresh
// hint and sequence number, from the authority.
func (ca *CA) Bundle() (*spiffebundle.Bundle, error) { return ca.auth.Bundle() }

// Watch returns a channel that receives after the authority's bundle or
// SVIDs change (a rotation step, an intermediate update, a Workload API
// update), and a function that stops the watch. SVIDSource uses it to
// re-obtain its SVID.
func (ca *CA) Watch() (<-chan struct{}, func()) { return ca.auth.Watch() }

// GetBundleForTrustDomain returns the CA's bundle for its own trust domain
// and an error matching ErrNotFederated for any other. It implements
// spiffebundle.Source, so a CA can back a bundle endpoint directly.
func (ca *CA) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	if td != ca.td {
		return nil, fmt.Errorf("%w: %s (this CA serves %s)", ErrNotFederated, td, ca.td)
	}
	return ca.auth.Bundle()
}

// GetX509BundleForTrustDomain is GetBundleForTrustDomain's X.509 part. It
// implements x509bundle.Source.
func (ca *CA) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b, err := ca.GetBundleForTrustDomain(td)
	if err != nil {
		return nil, err
	}
	return b.X509Bundle(), nil
}
