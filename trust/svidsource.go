package trust

import (
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// X509SVIDIssuer hands out X509-SVIDs by SPIFFE ID. It is consumed by
// SVIDSource, which calls it from its Run goroutine (and once from
// NewSVIDSource). *CA implements it.
type X509SVIDIssuer interface {
	// IssueX509SVID returns a currently valid X509-SVID for id. The caller
	// must not modify it.
	IssueX509SVID(id spiffeid.ID) (*x509svid.SVID, error)
}

// watcher is implemented by issuers that announce changes (CA.Watch).
// SVIDSource re-obtains its SVID when it fires.
type watcher interface {
	Watch() (<-chan struct{}, func())
}

// SVIDSourceConfig configures an SVIDSource. Build it with
// DefaultSVIDSourceConfig.
type SVIDSourceConfig struct {
	// RetryInterval is the first wait after a failed renewal; it doubles
	// up to MaxRetryInterval.
	RetryInterval time.Duration
	// MaxRetryInterval bounds the wait between failed renewals.
	MaxRetryInterval time.Duration
	// Clock returns the current time. Run's timers use the time package,
	// so tests of renewal run under testing/synctest with time.Now.
	Clock func() time.Time
}

// DefaultSVIDSourceConfig returns an SVIDSourceConfig with every field
// set: retries after 1s, backing off to 30s.
func DefaultSVIDSourceConfig() SVIDSourceConfig {
	return SVIDSourceConfig{RetryInterval: time.Second, MaxRetryInterval: 30 * time.Second, Clock: time.Now}
}

// Validate reports every invalid field at once.
func (c *SVIDSourceConfig) Validate() error {
	var errs configErrors
	if c.RetryInterval < time.Millisecond || c.RetryInterval > time.Minute {
		errs.add("retry_interval", "%v must be in 1ms..1m0s", c.RetryInterval)
	}
	if c.MaxRetryInterval < c.RetryInterval || c.MaxRetryInterval > time.Hour {
		errs.add("max_retry_interval", "%v must be in retry_interval (%v)..1h0m0s", c.MaxRetryInterval, c.RetryInterval)
	}
	if c.Clock == nil {
		errs.add("clock", "required")
	}
	return errs.err()
}

// SVIDSource holds one identity's X509-SVID and renews it at half-life
// (half-way between its NotBefore and NotAfter), and whenever the issuer
// announces a change. It implements x509svid.Source: tls.Configs built on
// it with ServerTLS or ClientTLS read the current SVID at every handshake,
// so new handshakes use a renewed SVID at once while established
// connections keep theirs.
//
// Renewal happens in Run; without Run the SVID is never renewed.
type SVIDSource struct {
	cfg    SVIDSourceConfig
	issuer X509SVIDIssuer
	id     spiffeid.ID
	n      notifier

	mu      sync.RWMutex
	svid    *x509svid.SVID
	lastErr error
}

var _ x509svid.Source = (*SVIDSource)(nil)

// NewSVIDSource obtains the first SVID for id from issuer, and returns its
// error if that fails.
func NewSVIDSource(issuer X509SVIDIssuer, id spiffeid.ID, cfg SVIDSourceConfig) (*SVIDSource, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if issuer == nil {
		return nil, &ConfigError{Field: "issuer", Reason: "required"}
	}
	s := &SVIDSource{cfg: cfg, issuer: issuer, id: id}
	svid, err := s.issue()
	if err != nil {
		return nil, err
	}
	s.svid = svid
	return s, nil
}

func (s *SVIDSource) issue() (*x509svid.SVID, error) {
	svid, err := s.issuer.IssueX509SVID(s.id)
	if err != nil {
		return nil, err
	}
	if svid.ID != s.id || len(svid.Certificates) == 0 {
		return nil, fmt.Errorf("trust: issuer returned an SVID for %s, want %s", svid.ID, s.id)
	}
	return svid, nil
}

// ID returns the identity the source holds an SVID for.
func (s *SVIDSource) ID() spiffeid.ID { return s.id }

// GetX509SVID returns the current SVID. It implements x509svid.Source and
// never fails once NewSVIDSource succeeded (an expired SVID is returned as
// is; peers reject it).
func (s *SVIDSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.svid, nil
}

// Watch returns a channel that receives after each renewal, and a
// function that stops the watch.
func (s *SVIDSource) Watch() (<-chan struct{}, func()) { return s.n.watch() }

// LastError returns the error of the last renewal attempt, or nil if it
// succeeded.
func (s *SVIDSource) LastError() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lastErr
}

// RenewAt returns when the current SVID reaches half-life.
func (s *SVIDSource) RenewAt() time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return halfLife(s.svid.Certificates[0])
}

func halfLife(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2)
}

// Run renews the SVID at half-life until ctx is done, then returns nil. A
// failed renewal is retried after RetryInterval, doubling up to
// MaxRetryInterval. If the issuer returns the SVID already held (SPIRE has
// not rotated it yet) that counts as a failure and is retried the same way.
func (s *SVIDSource) Run(ctx context.Context) error {
	var changed <-chan struct{}
	if w, ok := s.issuer.(watcher); ok {
		ch, stop := w.Watch()
		defer stop()
		changed = ch
	}
	retry := time.Duration(0)
	for {
		wait := s.RenewAt().Sub(s.cfg.Clock())
		if retry > 0 {
			wait = retry
		}
		timer := time.NewTimer(max(wait, 0))
		forced := false
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-changed:
			timer.Stop()
			forced = true
		case <-timer.C:
		}
		svid, err := s.issue()
		switch {
		case err == nil && svid.Certificates[0].Equal(s.current().Certificates[0]):
			if forced {
				// A change elsewhere in the issuer; this SVID is unchanged.
				continue
			}
			err = fmt.Errorf("trust: renew %s: the issuer returned the SVID already held (serial %x)", s.id, svid.Certificates[0].SerialNumber)
		case err == nil:
			s.mu.Lock()
			s.svid, s.lastErr = svid, nil
			s.mu.Unlock()
			retry = 0
			s.n.notify()
			continue
		}
		s.mu.Lock()
		s.lastErr = err
		s.mu.Unlock()
		retry = min(max(2*retry, s.cfg.RetryInterval), s.cfg.MaxRetryInterval)
	}
}

func (s *SVIDSource) current() *x509svid.SVID {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.svid
}
