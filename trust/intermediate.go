package trust

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// IntermediateConfig configures an IntermediateAuthority. Build it with
// DefaultIntermediateConfig, set TrustDomain, ChainPEM and KeyPEM, and pass
// it to NewIntermediateAuthority.
type IntermediateConfig struct {
	// TrustDomain is the trust domain the intermediate signs for; its
	// certificate's URI SAN must name it. Required.
	TrustDomain spiffeid.TrustDomain
	// ChainPEM holds the intermediate CA certificate first, followed by
	// any further intermediates, optionally ending with the root (as
	// cert-manager writes tls.crt). Required.
	ChainPEM []byte
	// KeyPEM holds the intermediate's private key: PKCS#8, SEC 1 or
	// PKCS#1. Required.
	KeyPEM []byte
	// RootsPEM holds the roots relying parties trust (cert-manager's
	// ca.crt). If empty, ChainPEM must end with a self-signed root, which
	// becomes the bundle.
	RootsPEM []byte
	// MaxSVIDTTL is the longest SVID lifetime the intermediate signs.
	MaxSVIDTTL time.Duration
	// RefreshHint is published in the bundle.
	RefreshHint time.Duration
	// Clock returns the current time.
	Clock func() time.Time
}

// DefaultIntermediateConfig returns an IntermediateConfig with every
// tunable set; the trust domain and the PEM material have no default.
func DefaultIntermediateConfig() IntermediateConfig {
	return IntermediateConfig{
		MaxSVIDTTL:  DefaultSVIDTTL,
		RefreshHint: DefaultRefreshHint,
		Clock:       time.Now,
	}
}

// Validate reports every invalid field at once. It checks presence and
// bounds; the PEM material itself is checked by NewIntermediateAuthority.
func (c *IntermediateConfig) Validate() error {
	var errs configErrors
	if c.TrustDomain.IsZero() {
		errs.add("trust_domain", "required")
	}
	if len(c.ChainPEM) == 0 {
		errs.add("chain_pem", "required")
	}
	if len(c.KeyPEM) == 0 {
		errs.add("key_pem", "required")
	}
	for _, f := range []struct {
		name string
		n    int
	}{{"chain_pem", len(c.ChainPEM)}, {"key_pem", len(c.KeyPEM)}, {"roots_pem", len(c.RootsPEM)}} {
		if f.n > MaxPEMSize {
			errs.add(f.name, "%d bytes, at most %d", f.n, MaxPEMSize)
		}
	}
	if c.MaxSVIDTTL < MinSVIDTTL || c.MaxSVIDTTL > MaxAllowedSVIDTTL {
		errs.add("max_svid_ttl", "%v must be in %v..%v", c.MaxSVIDTTL, MinSVIDTTL, MaxAllowedSVIDTTL)
	}
	if c.RefreshHint < MinRefreshHint || c.RefreshHint > MaxRefreshHint {
		errs.add("refresh_hint", "%v must be in %v..%v", c.RefreshHint, MinRefreshHint, MaxRefreshHint)
	}
	if c.Clock == nil {
		errs.add("clock", "required")
	}
	return errs.err()
}

// intermediate is validated operator material.
type intermediate struct {
	// chain is the signing certificate followed by further intermediates,
	// without roots: what an SVID carries after its leaf.
	chain []*x509.Certificate
	key   crypto.Signer
	roots []*x509.Certificate
}

// parseIntermediate loads and checks operator-provided CA material for td
// at time now: the first certificate of chainPEM must be a CA certificate
// with keyCertSign whose only URI SAN is in td, valid now, matching the
// key; each certificate must be signed by the next; and the chain must
// verify to one of the roots (rootsPEM, or the chain's own self-signed last
// certificate). Errors match ErrInvalidAuthority.
func parseIntermediate(td spiffeid.TrustDomain, chainPEM, keyPEM, rootsPEM []byte, now time.Time) (*intermediate, error) {
	chain, err := parseCertsPEM("chain", chainPEM)
	if err != nil {
		return nil, err
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	var roots []*x509.Certificate
	if len(rootsPEM) > 0 {
		if roots, err = parseCertsPEM("roots", rootsPEM); err != nil {
			return nil, err
		}
	}
	bad := func(format string, args ...any) (*intermediate, error) {
		return nil, fmt.Errorf("%w: %s", ErrInvalidAuthority, fmt.Sprintf(format, args...))
	}

	signer := chain[0]
	if len(signer.URIs) != 1 {
		return bad("intermediate %s has %d URI SANs, want exactly 1 (spiffe://%s)", signer.Subject, len(signer.URIs), td)
	}
	id, err := spiffeid.FromURI(signer.URIs[0])
	if err != nil {
		return bad("intermediate %s: URI SAN %q is not a SPIFFE ID: %v", signer.Subject, signer.URIs[0], err)
	}
	if id.TrustDomain() != td {
		return nil, fmt.Errorf("%w: %w: intermediate %s is for trust domain %s, not %s", ErrInvalidAuthority, ErrTrustDomainMismatch, signer.Subject, id.TrustDomain(), td)
	}
	for i, c := range chain {
		if !c.BasicConstraintsValid || !c.IsCA {
			return bad("chain certificate %d (%s) is not a CA certificate", i, c.Subject)
		}
		if c.KeyUsage&x509.KeyUsageCertSign == 0 {
			return bad("chain certificate %d (%s) lacks the keyCertSign key usage", i, c.Subject)
		}
		if now.Before(c.NotBefore) || !now.Before(c.NotAfter) {
			return nil, fmt.Errorf("%w: %w: chain certificate %d (%s) is valid %s to %s", ErrInvalidAuthority, ErrAuthorityExpired, i, c.Subject,
				c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
		}
		if i+1 < len(chain) {
			if err := c.CheckSignatureFrom(chain[i+1]); err != nil {
				return bad("chain certificate %d (%s) is not signed by certificate %d (%s): %v", i, c.Subject, i+1, chain[i+1].Subject, err)
			}
		}
	}
	if !keyMatches(key, signer) {
		return bad("the key does not match intermediate %s", signer.Subject)
	}

	last := chain[len(chain)-1]
	selfSigned := len(chain) > 1 && last.CheckSignatureFrom(last) == nil && string(last.RawSubject) == string(last.RawIssuer)
	switch {
	case len(roots) == 0 && !selfSigned:
		return bad("roots_pem is empty and the chain does not end with a self-signed root")
	case len(roots) == 0:
		roots = []*x509.Certificate{last}
		chain = chain[:len(chain)-1]
	case selfSigned:
		// The chain includes its root; the bundle (roots) carries roots,
		// so SVIDs need not.
		chain = chain[:len(chain)-1]
	}
	if err := checkAuthorities(td, roots); err != nil {
		return nil, fmt.Errorf("%w: roots: %w", ErrInvalidAuthority, err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := signer.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return bad("intermediate %s does not verify to the roots: %v", signer.Subject, err)
	}
	return &intermediate{chain: chain, key: key, roots: roots}, nil
}

// IntermediateAuthority is an Authority over an operator-provided
// intermediate CA. SVIDs carry the intermediate chain up to, but
// excluding, the root; the bundle holds the roots. Update swaps in renewed
// material (cert-manager renews intermediates) without a restart.
//
// The sequence number is not persisted: it starts at the Unix time in
// seconds and increases (by at least one) when the roots change, so it
// keeps increasing across restarts as long as the clock does.
type IntermediateAuthority struct {
	cfg IntermediateConfig
	n   notifier

	mu  sync.RWMutex
	cur *intermediate
	seq uint64
}

// NewIntermediateAuthority validates cfg and the material it holds (see
// IntermediateConfig) and returns the authority. Errors are *ConfigErrors
// for the configuration and match ErrInvalidAuthority for the material.
func NewIntermediateAuthority(cfg IntermediateConfig) (*IntermediateAuthority, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	now := cfg.Clock()
	m, err := parseIntermediate(cfg.TrustDomain, cfg.ChainPEM, cfg.KeyPEM, cfg.RootsPEM, now)
	if err != nil {
		return nil, err
	}
	return &IntermediateAuthority{cfg: cfg, cur: m, seq: nextSequence(0, now)}, nil
}

// Update replaces the material with renewed PEM (same rules as
// NewIntermediateAuthority). On error nothing changes. The sequence number
// increases if the roots changed; watchers are notified either way, so
// SVIDSources re-issue with the new chain.
func (a *IntermediateAuthority) Update(chainPEM, keyPEM, rootsPEM []byte) error {
	now := a.cfg.Clock()
	m, err := parseIntermediate(a.cfg.TrustDomain, chainPEM, keyPEM, rootsPEM, now)
	if err != nil {
		return err
	}
	a.mu.Lock()
	if !sameCerts(a.cur.roots, m.roots) {
		a.seq = nextSequence(a.seq, now)
	}
	a.cur = m
	a.mu.Unlock()
	a.n.notify()
	return nil
}

// MaxSVIDTTL returns the longest SVID lifetime the authority signs.
func (a *IntermediateAuthority) MaxSVIDTTL() time.Duration { return a.cfg.MaxSVIDTTL }

// TrustDomain returns the trust domain the authority signs for.
func (a *IntermediateAuthority) TrustDomain() spiffeid.TrustDomain { return a.cfg.TrustDomain }

// Bundle returns the roots with the configured refresh hint and the
// sequence number.
func (a *IntermediateAuthority) Bundle() (*spiffebundle.Bundle, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	b := spiffebundle.FromX509Authorities(a.cfg.TrustDomain, a.cur.roots)
	b.SetRefreshHint(a.cfg.RefreshHint)
	b.SetSequenceNumber(a.seq)
	return b, nil
}

// SignX509SVID signs tmpl with the intermediate, capping its NotAfter at
// the intermediate's, and returns the leaf followed by the chain.
func (a *IntermediateAuthority) SignX509SVID(tmpl *x509.Certificate, pub crypto.PublicKey) ([]*x509.Certificate, error) {
	a.mu.RLock()
	m := a.cur
	a.mu.RUnlock()
	return signLeaf(tmpl, pub, a.cfg.TrustDomain, a.cfg.MaxSVIDTTL, a.cfg.Clock(), m.chain[0], m.key, m.chain)
}

// Watch returns a channel that receives after each Update.
func (a *IntermediateAuthority) Watch() (<-chan struct{}, func()) { return a.n.watch() }
