package trust

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// WorkloadAPIConfig configures a WorkloadAPIAuthority. Build it with
// DefaultWorkloadAPIConfig and set TrustDomain and Addr.
type WorkloadAPIConfig struct {
	// TrustDomain is the SPIRE deployment's trust domain. Required. SVIDs
	// and bundles of other trust domains that the Workload API hands out
	// are ignored: federation comes from the hub.
	TrustDomain spiffeid.TrustDomain
	// Addr is the Workload API address, for example
	// "unix:///run/spire/sockets/agent.sock". Required: this package never
	// reads SPIFFE_ENDPOINT_SOCKET; the command that builds the config may.
	Addr string
	// RefreshHint is published in the bundle (the Workload API carries
	// none).
	RefreshHint time.Duration
	// Clock returns the current time; it seeds the sequence number.
	Clock func() time.Time
}

// DefaultWorkloadAPIConfig returns a WorkloadAPIConfig with every tunable
// set; the trust domain and address have no default.
func DefaultWorkloadAPIConfig() WorkloadAPIConfig {
	return WorkloadAPIConfig{RefreshHint: DefaultRefreshHint, Clock: time.Now}
}

// Validate reports every invalid field at once.
func (c *WorkloadAPIConfig) Validate() error {
	var errs configErrors
	if c.TrustDomain.IsZero() {
		errs.add("trust_domain", "required")
	}
	if c.Addr == "" {
		errs.add("addr", "required")
	} else if err := workloadapi.ValidateAddress(c.Addr); err != nil {
		errs.add("addr", "%q: %v", c.Addr, err)
	}
	if c.RefreshHint < MinRefreshHint || c.RefreshHint > MaxRefreshHint {
		errs.add("refresh_hint", "%v must be in %v..%v", c.RefreshHint, MinRefreshHint, MaxRefreshHint)
	}
	if c.Clock == nil {
		errs.add("clock", "required")
	}
	return errs.err()
}

// WorkloadAPIAuthority is an Authority backed by an existing SPIRE
// deployment, reached through the SPIFFE Workload API with go-spiffe's
// workloadapi client. It does not sign: SignX509SVID returns ErrCannotSign,
// and FetchX509SVID returns the SVID SPIRE issued for an ID, which SPIRE
// also renews. It is also an x509svid.Source (the first SVID of its trust
// domain) and an x509bundle.Source (its own trust domain only), so the same
// consumers work with it as with a CA.
//
// The sequence number is not persisted; it starts at the Unix time in
// seconds and increases when SPIRE's roots change.
type WorkloadAPIAuthority struct {
	cfg    WorkloadAPIConfig
	client *workloadapi.Client
	cancel context.CancelFunc
	done   chan struct{}
	n      notifier

	mu      sync.RWMutex
	svids   []*x509svid.SVID
	roots   []*x509.Certificate
	seq     uint64
	lastErr error
	ready   chan struct{}
	readyOK bool
}

var (
	_ x509svid.Source   = (*WorkloadAPIAuthority)(nil)
	_ x509bundle.Source = (*WorkloadAPIAuthority)(nil)
)

// NewWorkloadAPIAuthority connects to the Workload API and blocks until the
// first X.509 context with an SVID and bundle of cfg.TrustDomain arrives,
// or ctx is done (then it returns ctx's error joined with the last Workload
// API error). Close releases the connection.
func NewWorkloadAPIAuthority(ctx context.Context, cfg WorkloadAPIConfig) (*WorkloadAPIAuthority, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(cfg.Addr))
	if err != nil {
		return nil, fmt.Errorf("trust: workload API: %w", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	a := &WorkloadAPIAuthority{cfg: cfg, client: client, cancel: cancel, done: make(chan struct{}), ready: make(chan struct{})}
	go func() {
		defer close(a.done)
		// WatchX509Context retries with backoff until wctx is cancelled.
		_ = client.WatchX509Context(wctx, a)
	}()
	select {
	case <-a.ready:
		return a, nil
	case <-ctx.Done():
		a.mu.RLock()
		last := a.lastErr
		a.mu.RUnlock()
		_ = a.Close()
		return nil, fmt.Errorf("trust: workload API: waiting for the first X.509 context: %w", errors.Join(ctx.Err(), last))
	}
}

// OnX509ContextUpdate implements workloadapi.X509ContextWatcher; it is
// called by the watch goroutine only.
func (a *WorkloadAPIAuthority) OnX509ContextUpdate(c *workloadapi.X509Context) {
	var svids []*x509svid.SVID
	for _, s := range c.SVIDs {
		if s.ID.MemberOf(a.cfg.TrustDomain) {
			svids = append(svids, s)
		}
	}
	var roots []*x509.Certificate
	if b, ok := c.Bundles.Get(a.cfg.TrustDomain); ok {
		roots = b.X509Authorities()
	}
	bundleErr := checkAuthorities(a.cfg.TrustDomain, roots)
	a.mu.Lock()
	switch {
	case len(svids) == 0:
		a.lastErr = fmt.Errorf("%w: the Workload API sent no SVID in trust domain %s", ErrNoSVID, a.cfg.TrustDomain)
	case bundleErr != nil:
		a.lastErr = fmt.Errorf("trust: workload API bundle: %w", bundleErr)
	default:
		if !sameCerts(a.roots, roots) {
			a.seq = nextSequence(a.seq, a.cfg.Clock())
		}
		a.svids, a.roots, a.lastErr = svids, roots, nil
		if !a.readyOK {
			a.readyOK = true
			close(a.ready)
		}
	}
	a.mu.Unlock()
	a.n.notify()
}

// OnX509ContextWatchError implements workloadapi.X509ContextWatcher. The
// last SVIDs and bundle stay in use; the error is kept for LastError.
func (a *WorkloadAPIAuthority) OnX509ContextWatchError(err error) {
	a.mu.Lock()
	a.lastErr = err
	a.mu.Unlock()
}

// LastError returns the last Workload API error since the last good
// update, or nil.
func (a *WorkloadAPIAuthority) LastError() error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.lastErr
}

// Bundle returns SPIRE's roots for the trust domain with the configured
// refresh hint and the sequence number.
func (a *WorkloadAPIAuthority) Bundle() (*spiffebundle.Bundle, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	b := spiffebundle.FromX509Authorities(a.cfg.TrustDomain, a.roots)
	b.SetRefreshHint(a.cfg.RefreshHint)
	b.SetSequenceNumber(a.seq)
	return b, nil
}

// SignX509SVID returns ErrCannotSign: SPIRE keeps its signing keys.
func (a *WorkloadAPIAuthority) SignX509SVID(*x509.Certificate, crypto.PublicKey) ([]*x509.Certificate, error) {
	return nil, fmt.Errorf("%w: SVIDs come from SPIRE through the Workload API", ErrCannotSign)
}

// Watch returns a channel that receives after every Workload API update
// (new SVIDs or a new bundle).
func (a *WorkloadAPIAuthority) Watch() (<-chan struct{}, func()) { return a.n.watch() }

// FetchX509SVID returns SPIRE's current X509-SVID for id, or an error
// matching ErrNoSVID if the Workload API offers none (this workload is not
// registered for id). The SVID is shared; callers must not modify it.
func (a *WorkloadAPIAuthority) FetchX509SVID(id spiffeid.ID) (*x509svid.SVID, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	for _, s := range a.svids {
		if s.ID == id {
			return s, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNoSVID, id)
}

// GetX509SVID returns the first SVID of the trust domain the Workload API
// offers. It implements x509svid.Source.
func (a *WorkloadAPIAuthority) GetX509SVID() (*x509svid.SVID, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if len(a.svids) == 0 {
		return nil, fmt.Errorf("%w: none in trust domain %s", ErrNoSVID, a.cfg.TrustDomain)
	}
	return a.svids[0], nil
}

// GetX509BundleForTrustDomain returns SPIRE's bundle for the authority's own
// trust domain, and an error matching ErrNotFederated for any other. It
// implements x509bundle.Source.
func (a *WorkloadAPIAuthority) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != a.cfg.TrustDomain {
		return nil, fmt.Errorf("%w: %s", ErrNotFederated, td)
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	return x509bundle.FromX509Authorities(td, a.roots), nil
}

// Close stops watching and closes the Workload API connection.
func (a *WorkloadAPIAuthority) Close() error {
	a.cancel()
	<-a.done
	return a.client.Close()
}

// UnixAddr returns the Workload API address of a unix socket path, in the
// form Addr expects ("unix:///path").
func UnixAddr(path string) string {
	return (&url.URL{Scheme: "unix", Path: path}).String()
}
