package trust

import (
	"crypto/x509"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	federationv1 "github.com/meshfed/meshfed/federation/v1"
)

// MaxBundleRefreshHint bounds the refresh hint a bundle may carry.
const MaxBundleRefreshHint = 365 * 24 * time.Hour

// BundleSet holds one trust bundle per trust domain: the federated set a
// gateway or agent trusts. Bundles are never merged: a peer's certificate
// is verified only against the bundle of the trust domain its SPIFFE ID
// names, and a trust domain without a bundle is not federated.
//
// BundleSet is an x509bundle.Source and a spiffebundle.Source, read live at
// every lookup: a tls.Config built on it (ServerTLS, ClientTLS) sees Set
// and Remove at its next handshake. It is safe for concurrent use; the
// zero value is not usable, call NewBundleSet.
type BundleSet struct {
	n notifier

	mu      sync.RWMutex
	bundles map[spiffeid.TrustDomain]*spiffebundle.Bundle
}

var (
	_ x509bundle.Source   = (*BundleSet)(nil)
	_ spiffebundle.Source = (*BundleSet)(nil)
)

// NewBundleSet returns an empty set.
func NewBundleSet() *BundleSet {
	return &BundleSet{bundles: make(map[spiffeid.TrustDomain]*spiffebundle.Bundle)}
}

// CheckBundle validates b as a federated trust bundle: a trust domain, one
// to MaxBundleAuthorities X.509 authorities that are CA certificates none
// of which names another trust domain in a SPIFFE URI SAN, and a refresh
// hint in 0..MaxBundleRefreshHint. Errors match ErrInvalidBundle (and
// ErrTrustDomainMismatch for another trust domain's authority).
func CheckBundle(b *spiffebundle.Bundle) error {
	if b == nil || b.TrustDomain().IsZero() {
		return fmt.Errorf("%w: no trust domain", ErrInvalidBundle)
	}
	if h, ok := b.RefreshHint(); ok && (h < 0 || h > MaxBundleRefreshHint) {
		return fmt.Errorf("%w: %s: refresh hint %v must be in 0s..%v", ErrInvalidBundle, b.TrustDomain(), h, MaxBundleRefreshHint)
	}
	return checkAuthorities(b.TrustDomain(), b.X509Authorities())
}

// Set stores a copy of b under its trust domain, replacing any bundle the
// trust domain had, after CheckBundle. Watchers are notified if the set
// changed.
func (s *BundleSet) Set(b *spiffebundle.Bundle) error {
	if err := CheckBundle(b); err != nil {
		return err
	}
	c := b.Clone()
	s.mu.Lock()
	old, ok := s.bundles[c.TrustDomain()]
	if ok && old.Equal(c) {
		s.mu.Unlock()
		return nil
	}
	s.bundles[c.TrustDomain()] = c
	s.mu.Unlock()
	s.n.notify()
	return nil
}

// Replace makes the set hold exactly bundles (after checking them all; on
// error nothing changes), as after a full resync from the hub. Two bundles
// of one trust domain are an error.
func (s *BundleSet) Replace(bundles []*spiffebundle.Bundle) error {
	next := make(map[spiffeid.TrustDomain]*spiffebundle.Bundle, len(bundles))
	for _, b := range bundles {
		if err := CheckBundle(b); err != nil {
			return err
		}
		if _, dup := next[b.TrustDomain()]; dup {
			return fmt.Errorf("%w: two bundles for trust domain %s", ErrInvalidBundle, b.TrustDomain())
		}
		next[b.TrustDomain()] = b.Clone()
	}
	s.mu.Lock()
	s.bundles = next
	s.mu.Unlock()
	s.n.notify()
	return nil
}

// Remove withdraws td's bundle: from the next handshake on, peers of td
// are rejected. It reports whether td had a bundle.
func (s *BundleSet) Remove(td spiffeid.TrustDomain) bool {
	s.mu.Lock()
	_, ok := s.bundles[td]
	delete(s.bundles, td)
	s.mu.Unlock()
	if ok {
		s.n.notify()
	}
	return ok
}

// Get returns a copy of td's bundle, if any.
func (s *BundleSet) Get(td spiffeid.TrustDomain) (*spiffebundle.Bundle, bool) {
	s.mu.RLock()
	b, ok := s.bundles[td]
	s.mu.RUnlock()
	if !ok {
		return nil, false
	}
	return b.Clone(), true
}

// Has reports whether td is federated (has a bundle).
func (s *BundleSet) Has(td spiffeid.TrustDomain) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.bundles[td]
	return ok
}

// Len returns the number of trust domains in the set.
func (s *BundleSet) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.bundles)
}

// All returns copies of every bundle, sorted by trust domain. The caller
// owns the slice and the bundles.
func (s *BundleSet) All() []*spiffebundle.Bundle {
	s.mu.RLock()
	out := make([]*spiffebundle.Bundle, 0, len(s.bundles))
	for _, b := range s.bundles {
		out = append(out, b.Clone())
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b *spiffebundle.Bundle) int { return a.TrustDomain().Compare(b.TrustDomain()) })
	return out
}

// TrustDomains returns the federated trust domains, sorted.
func (s *BundleSet) TrustDomains() []spiffeid.TrustDomain {
	s.mu.RLock()
	out := make([]spiffeid.TrustDomain, 0, len(s.bundles))
	for td := range s.bundles {
		out = append(out, td)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, spiffeid.TrustDomain.Compare)
	return out
}

// Watch returns a channel that receives (coalesced) after every change to
// the set, and a function that stops the watch. Read the new state with
// All or Get.
func (s *BundleSet) Watch() (<-chan struct{}, func()) { return s.n.watch() }

// GetBundleForTrustDomain returns a copy of td's bundle, or an error
// matching ErrNotFederated. It implements spiffebundle.Source.
func (s *BundleSet) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	b, ok := s.Get(td)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFederated, td)
	}
	return b, nil
}

// GetX509BundleForTrustDomain returns td's X.509 authorities, or an error
// matching ErrNotFederated. It implements x509bundle.Source and is what
// TLS verification calls at every handshake.
func (s *BundleSet) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.RLock()
	b, ok := s.bundles[td]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFederated, td)
	}
	return x509bundle.FromX509Authorities(td, b.X509Authorities()), nil
}

// BundleToProto converts b to the federation API's TrustBundle: the X.509
// authorities as DER, the refresh hint in whole seconds (rounded up; 0 if
// unset) and the sequence number (0 if unset). JWT authorities are not
// carried.
func BundleToProto(b *spiffebundle.Bundle) *federationv1.TrustBundle {
	p := &federationv1.TrustBundle{TrustDomain: b.TrustDomain().Name()}
	for _, c := range b.X509Authorities() {
		p.X509Authorities = append(p.X509Authorities, slices.Clone(c.Raw))
	}
	if h, ok := b.RefreshHint(); ok && h > 0 {
		p.RefreshHintSeconds = int64((h + time.Second - 1) / time.Second)
	}
	if seq, ok := b.SequenceNumber(); ok {
		p.SequenceNumber = seq
	}
	return p
}

// BundleFromProto converts a federation API TrustBundle, validating it
// like CheckBundle. A refresh_hint_seconds of 0 means no hint. Errors match
// ErrInvalidBundle.
func BundleFromProto(p *federationv1.TrustBundle) (*spiffebundle.Bundle, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: nil", ErrInvalidBundle)
	}
	td, err := spiffeid.TrustDomainFromString(p.GetTrustDomain())
	if err != nil || td.Name() != p.GetTrustDomain() {
		return nil, fmt.Errorf("%w: trust_domain %q is not a trust domain name", ErrInvalidBundle, truncate(p.GetTrustDomain()))
	}
	if n := len(p.GetX509Authorities()); n > MaxBundleAuthorities {
		return nil, fmt.Errorf("%w: %s: %d x509_authorities, at most %d", ErrInvalidBundle, td, n, MaxBundleAuthorities)
	}
	certs := make([]*x509.Certificate, 0, len(p.GetX509Authorities()))
	for i, der := range p.GetX509Authorities() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: x509_authorities[%d]: %w", ErrInvalidBundle, td, i, err)
		}
		certs = append(certs, c)
	}
	h := p.GetRefreshHintSeconds()
	if h < 0 || h > int64(MaxBundleRefreshHint/time.Second) {
		return nil, fmt.Errorf("%w: %s: refresh_hint_seconds %d must be in 0..%d", ErrInvalidBundle, td, h, int64(MaxBundleRefreshHint/time.Second))
	}
	b := spiffebundle.FromX509Authorities(td, certs)
	if h > 0 {
		b.SetRefreshHint(time.Duration(h) * time.Second)
	}
	b.SetSequenceNumber(p.GetSequenceNumber())
	if err := CheckBundle(b); err != nil {
		return nil, err
	}
	return b, nil
}

func truncate(s string) string {
	if len(s) > maxQuoted {
		return s[:maxQuoted] + "..."
	}
	return s
}
