package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/pki"
	"github.com/meshfed/meshfed/trust/x509pem"
)

// fakeHub is the hub's side of Sync.Renew, with the hub's rules (one
// current serial per cluster; the replaced serial may only fetch the
// current certificate again, for the same key), a CA, and outages.
type fakeHub struct {
	t   testing.TB
	ca  *pki.CA
	ttl time.Duration

	mu        sync.Mutex
	current   *x509.Certificate
	previous  *big.Int
	downUntil time.Time
	loseNext  bool
	calls     []renewCall
}

type renewCall struct {
	at        time.Time
	presented *x509.Certificate
	keyHash   [32]byte
	code      codes.Code
	issued    *x509.Certificate
}

var _ certRenewer = (*fakeHub)(nil)

func newFakeHub(t testing.TB, ttl time.Duration) *fakeHub {
	t.Helper()
	ca, err := pki.NewCA("hub.meshfed", 100*365*24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &fakeHub{t: t, ca: ca, ttl: ttl}
}

// issue signs pub as the agent of east with the hub's validity rule: from
// a tenth of the lifetime before now to now + ttl, in whole seconds.
func (h *fakeHub) issue(pub any, now time.Time) *x509.Certificate {
	h.t.Helper()
	serial, err := pki.NewSerial()
	if err != nil {
		h.t.Fatal(err)
	}
	cert, err := h.ca.Sign(pub, pki.LeafOptions{
		SPIFFEID: "spiffe://hub.meshfed/cluster/east", Client: true, Serial: serial,
		NotBefore: now.Add(-h.ttl / 10).Truncate(time.Second), NotAfter: now.Add(h.ttl).Truncate(time.Second),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return cert
}

// join returns the credentials of a join now.
func (h *fakeHub) join() *Credentials {
	h.t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		h.t.Fatal(err)
	}
	keyPEM, err := x509pem.EncodeKey(key)
	if err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.current = h.issue(key.Public(), time.Now())
	return &Credentials{
		APIVersion: CredentialsAPIVersion, Kind: CredentialsKind, Cluster: "east",
		TrustDomain: "east.meshfed.local", HubTrustDomain: "hub.meshfed", HubAddresses: []string{"127.0.0.1:1"},
		HubCA: string(x509pem.EncodeCerts(h.ca.Cert)), Cert: string(x509pem.EncodeCerts(h.current)), Key: string(keyPEM),
	}
}

func (h *fakeHub) renew(_ context.Context, creds *Credentials, csrDER []byte) (*fedv1.RenewResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	presented, err := creds.leaf()
	if err != nil {
		h.t.Error(err)
		return nil, err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		h.t.Error(err)
		return nil, err
	}
	call := renewCall{at: time.Now(), presented: presented, keyHash: sha256.Sum256(csr.RawSubjectPublicKeyInfo)}
	answer := func(code codes.Code, cert *x509.Certificate) (*fedv1.RenewResponse, error) {
		call.code, call.issued = code, cert
		h.calls = append(h.calls, call)
		if code != codes.OK {
			return nil, status.Error(code, "fake hub refused")
		}
		return &fedv1.RenewResponse{ClientCertificate: x509pem.EncodeCerts(cert), HubCa: x509pem.EncodeCerts(h.ca.Cert)}, nil
	}
	switch {
	case time.Now().Before(h.downUntil):
		return answer(codes.Unavailable, nil)
	case time.Now().After(presented.NotAfter):
		return answer(codes.Unauthenticated, nil) // TLS would refuse it
	case h.previous != nil && presented.SerialNumber.Cmp(h.previous) == 0:
		if sha256.Sum256(h.current.RawSubjectPublicKeyInfo) != call.keyHash {
			return answer(codes.PermissionDenied, nil)
		}
		return answer(codes.OK, h.current)
	case presented.SerialNumber.Cmp(h.current.SerialNumber) != 0:
		return answer(codes.PermissionDenied, nil)
	}
	h.previous, h.current = h.current.SerialNumber, h.issue(csr.PublicKey, time.Now())
	if h.loseNext {
		h.loseNext = false
		return answer(codes.Unavailable, h.current) // committed, but the response is lost
	}
	return answer(codes.OK, h.current)
}

func (h *fakeHub) snapshot() []renewCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]renewCall(nil), h.calls...)
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// runKeeper runs a keeper over store until the returned stop is called.
func runKeeper(t *testing.T, k *credentialKeeper) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("keeper run: %v", err)
		}
	}
}

func storedCredentials(t *testing.T, s *memStore) *Credentials {
	t.Helper()
	b, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	c, err := decodeCredentials(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newTestKeeper(t *testing.T, h *fakeHub, creds *Credentials, store *memStore) *credentialKeeper {
	t.Helper()
	b, err := encodeCredentials(creds)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Save(b); err != nil {
		t.Fatal(err)
	}
	return newCredentialKeeper(store, creds, h, discardLog(), time.Second, 5*time.Minute)
}

func TestAgentCertRenewedAtHalfLifeAcrossManyLifetimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ttl = 30 * 24 * time.Hour
		const lifetimes = 12
		h := newFakeHub(t, ttl)
		store := &memStore{}
		k := newTestKeeper(t, h, h.join(), store)
		_, changed := k.current()
		stop := runKeeper(t, k)
		start := time.Now()
		time.Sleep(lifetimes * ttl)
		stop()

		calls := h.snapshot()
		// Lifetime ttl + ttl/10, renewed at half of it: every 0.45 ttl.
		if want := lifetimes * 100 / 45; len(calls) != want {
			t.Fatalf("%d renewals in %d lifetimes, want %d (one at each half-life, no more)", len(calls), lifetimes, want)
		}
		held, _ := k.current()
		prev := calls[0].presented
		for i, c := range calls {
			if c.code != codes.OK {
				t.Fatalf("renewal %d: %v", i, c.code)
			}
			if c.presented.SerialNumber.Cmp(prev.SerialNumber) != 0 {
				t.Fatalf("renewal %d presented serial %x, want the last issued %x", i, c.presented.SerialNumber, prev.SerialNumber)
			}
			if want := renewAt(prev); !c.at.Equal(want) {
				t.Fatalf("renewal %d at %v, want half-life %v (%v after the start)", i, c.at, want, c.at.Sub(start))
			}
			prev = c.issued
		}
		leaf, err := held.leaf()
		if err != nil {
			t.Fatal(err)
		}
		if leaf.SerialNumber.Cmp(prev.SerialNumber) != 0 {
			t.Fatalf("keeper holds serial %x, want the last issued %x", leaf.SerialNumber, prev.SerialNumber)
		}
		stored := storedCredentials(t, store)
		if stored.Cert != held.Cert || stored.Key != held.Key || stored.RenewalKey != "" {
			t.Fatal("stored credentials are not the ones held after the last renewal")
		}
		select {
		case <-changed:
		default:
			t.Fatal("renewals did not signal a change of credentials")
		}
	})
}

func TestAgentCertRenewalRetriesThroughOutagesWithOneKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ttl = time.Hour
		h := newFakeHub(t, ttl)
		store := &memStore{}
		joined := h.join()
		leaf0, err := joined.leaf()
		if err != nil {
			t.Fatal(err)
		}
		// The hub is down from before the half-life for 10 minutes.
		due := renewAt(leaf0)
		outageEnd := due.Add(10 * time.Minute)
		h.mu.Lock()
		h.downUntil = outageEnd
		h.mu.Unlock()
		k := newTestKeeper(t, h, joined, store)
		stop := runKeeper(t, k)
		time.Sleep(time.Until(due) + 30*time.Second)
		synctest.Wait()

		// Restart mid-outage from what is stored: the renewal key is there.
		stop()
		stored := storedCredentials(t, store)
		if stored.RenewalKey == "" || stored.Cert != joined.Cert {
			t.Fatal("during a renewal the store must hold the old certificate and the renewal's key")
		}
		k = newTestKeeper(t, h, stored, store)
		stop = runKeeper(t, k)
		// The first answer after the outage is lost (the hub issued the
		// certificate, the agent never heard).
		h.mu.Lock()
		h.loseNext = true
		h.mu.Unlock()
		maxWait := min(k.retryMax, leaf0.NotAfter.Sub(leaf0.NotBefore)/8)
		// Two attempts after the outage (the lost one, its retry), each at
		// most 1.5 × maxWait after the one before; the next renewal is due
		// 27 minutes after the second.
		time.Sleep(time.Until(outageEnd) + 3*maxWait)
		stop()

		calls := h.snapshot()
		var key [32]byte
		var ok, afterOutage *renewCall
		for i, c := range calls {
			if i == 0 {
				key = c.keyHash
			} else if c.keyHash != key {
				t.Fatalf("attempt %d asked for another key than attempt 0", i)
			}
			if i > 0 && c.at.Sub(calls[i-1].at) > maxWait*3/2 {
				t.Fatalf("attempt %d came %v after the one before, want at most 1.5 × %v", i, c.at.Sub(calls[i-1].at), maxWait)
			}
			if afterOutage == nil && !c.at.Before(outageEnd) {
				afterOutage = &calls[i]
			}
			if c.code == codes.OK {
				ok = &calls[i]
				break
			}
		}
		if ok == nil {
			t.Fatalf("no successful renewal in %d attempts", len(calls))
		}
		if afterOutage.at.Sub(outageEnd) > maxWait*3/2 {
			t.Fatalf("first attempt %v after the outage ended, want at most 1.5 × %v", afterOutage.at.Sub(outageEnd), maxWait)
		}
		if ok.at.After(leaf0.NotAfter) {
			t.Fatalf("renewed %v after the outage ended, but the certificate expired %v after it", ok.at.Sub(outageEnd), leaf0.NotAfter.Sub(outageEnd))
		}
		if len(calls) > 30 {
			t.Fatalf("%d attempts in a 10-minute outage: the backoff does not grow", len(calls))
		}
		lost := calls[len(calls)-2]
		if lost.code != codes.Unavailable || lost.issued == nil || lost.issued.SerialNumber.Cmp(ok.issued.SerialNumber) != 0 {
			t.Fatalf("the retry after a lost response got serial %x, want the one issued then", ok.issued.SerialNumber)
		}
		held, _ := k.current()
		leaf, err := held.leaf()
		if err != nil {
			t.Fatal(err)
		}
		if leaf.SerialNumber.Cmp(ok.issued.SerialNumber) != 0 || !bytes.Equal(leaf.RawSubjectPublicKeyInfo, ok.issued.RawSubjectPublicKeyInfo) {
			t.Fatal("the keeper does not hold the renewed certificate")
		}
		if s := storedCredentials(t, store); s.Cert != held.Cert || s.RenewalKey != "" {
			t.Fatal("the store does not hold the renewed certificate")
		}
	})
}
