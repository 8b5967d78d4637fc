package trust

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// scriptedIssuer wraps a CA: it can fail, or hand back the SVID it gave
// last (as SPIRE does before it rotates), and it announces changes.
type scriptedIssuer struct {
	ca *CA
	n  notifier

	mu    sync.Mutex
	fails int
	stale bool
	last  *x509svid.SVID
	calls []time.Time
}

func newScriptedIssuer(t testing.TB, ca *CA) *scriptedIssuer {
	t.Helper()
	return &scriptedIssuer{ca: ca}
}

func (s *scriptedIssuer) IssueX509SVID(id spiffeid.ID) (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, time.Now())
	if s.fails > 0 {
		s.fails--
		return nil, errors.New("issuer unavailable")
	}
	if s.stale && s.last != nil {
		return s.last, nil
	}
	svid, err := s.ca.IssueX509SVID(id)
	if err == nil {
		s.last = svid
	}
	return svid, err
}

func (s *scriptedIssuer) Watch() (<-chan struct{}, func()) { return s.n.watch() }

func (s *scriptedIssuer) set(fails int, stale bool) {
	s.mu.Lock()
	s.fails, s.stale = fails, stale
	s.mu.Unlock()
}

func (s *scriptedIssuer) callTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.calls...)
}

func TestSVIDSourceRenewsAtHalfLife(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca, ra := newTestCA(t, "west.test")
		defer func() { _ = ra.Close() }()
		src, err := NewSVIDSource(ca, GatewayID(ca.TrustDomain()), DefaultSVIDSourceConfig())
		if err != nil {
			t.Fatal(err)
		}
		first, _ := src.GetX509SVID()
		cfg := ServerTLS(src, NewBundleSet(), AuthorizeFederated())
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- src.Run(ctx) }()
		ch, stop := src.Watch()
		defer stop()

		prev := first
		for i := 0; i < 3; i++ {
			want := halfLife(prev.Certificates[0])
			<-ch
			if now := time.Now(); !now.Equal(want) {
				t.Errorf("renewal %d at %v, want half-life %v", i, now, want)
			}
			cur, _ := src.GetX509SVID()
			if cur.Certificates[0].Equal(prev.Certificates[0]) {
				t.Fatalf("renewal %d kept the same SVID", i)
			}
			// A tls.Config built on the source serves the renewed SVID to
			// the next handshake.
			cert, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
			if err != nil {
				t.Fatal(err)
			}
			if !cert.Leaf.Equal(cur.Certificates[0]) {
				t.Errorf("renewal %d: the TLS config still serves the old SVID", i)
			}
			prev = cur
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

func TestSVIDSourceRetriesWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca, ra := newTestCA(t, "west.test")
		defer func() { _ = ra.Close() }()
		iss := newScriptedIssuer(t, ca)
		cfg := DefaultSVIDSourceConfig()
		src, err := NewSVIDSource(iss, AgentID(ca.TrustDomain()), cfg)
		if err != nil {
			t.Fatal(err)
		}
		first, _ := src.GetX509SVID()
		iss.set(4, false)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() { _ = src.Run(ctx) }()
		ch, stop := src.Watch()
		defer stop()
		<-ch
		calls := iss.callTimes()[1:] // the first call was NewSVIDSource's
		if len(calls) != 5 {
			t.Fatalf("%d renewal attempts, want 5", len(calls))
		}
		if !calls[0].Equal(halfLife(first.Certificates[0])) {
			t.Errorf("first attempt at %v, want half-life", calls[0])
		}
		wantGaps := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
		for i, want := range wantGaps {
			if got := calls[i+1].Sub(calls[i]); got != want {
				t.Errorf("retry %d after %v, want %v", i+1, got, want)
			}
		}
		if src.LastError() != nil {
			t.Errorf("LastError after success = %v", src.LastError())
		}
	})
}

func TestSVIDSourceStaleSVIDIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca, ra := newTestCA(t, "west.test")
		defer func() { _ = ra.Close() }()
		iss := newScriptedIssuer(t, ca)
		src, err := NewSVIDSource(iss, AgentID(ca.TrustDomain()), DefaultSVIDSourceConfig())
		if err != nil {
			t.Fatal(err)
		}
		iss.set(0, true) // SPIRE has not rotated yet
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() { _ = src.Run(ctx) }()
		first, _ := src.GetX509SVID()
		time.Sleep(time.Until(halfLife(first.Certificates[0])) + 2*time.Second)
		synctest.Wait()
		if src.LastError() == nil {
			t.Error("a stale SVID at half-life is not reported")
		}
		ch, stop := src.Watch()
		defer stop()
		iss.set(0, false) // SPIRE rotated
		<-ch
		if cur, _ := src.GetX509SVID(); cur.Certificates[0].Equal(first.Certificates[0]) {
			t.Error("still the stale SVID")
		}
	})
}

func TestSVIDSourceFollowsIssuerChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca, ra := newTestCA(t, "west.test")
		defer func() { _ = ra.Close() }()
		iss := newScriptedIssuer(t, ca)
		src, err := NewSVIDSource(iss, AgentID(ca.TrustDomain()), DefaultSVIDSourceConfig())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() { _ = src.Run(ctx) }()
		synctest.Wait()
		ch, stop := src.Watch()
		defer stop()
		start := time.Now()
		iss.n.notify()
		<-ch
		if time.Since(start) != 0 {
			t.Errorf("re-issued %v after the issuer's change, want at once", time.Since(start))
		}
		// A change that leaves the SVID as it was is not an error.
		iss.set(0, true)
		iss.n.notify()
		synctest.Wait()
		if err := src.LastError(); err != nil {
			t.Errorf("LastError = %v", err)
		}
	})
}

func TestSVIDSourceRejectsWrongID(t *testing.T) {
	ca, _ := newTestCA(t, "west.test")
	iss := issuerFunc(func(spiffeid.ID) (*x509svid.SVID, error) { return ca.IssueX509SVID(AgentID(ca.TrustDomain())) })
	if _, err := NewSVIDSource(iss, GatewayID(ca.TrustDomain()), DefaultSVIDSourceConfig()); err == nil {
		t.Error("NewSVIDSource accepted an SVID for another ID")
	}
	if _, err := NewSVIDSource(nil, GatewayID(ca.TrustDomain()), DefaultSVIDSourceConfig()); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil issuer: %v", err)
	}
}

type issuerFunc func(spiffeid.ID) (*x509svid.SVID, error)

func (f issuerFunc) IssueX509SVID(id spiffeid.ID) (*x509svid.SVID, error) { return f(id) }
