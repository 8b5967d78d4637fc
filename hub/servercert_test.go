package hub

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/internal/pki"
	"github.com/meshfed/meshfed/trust/x509pem"
)

// fakeCASource is the replicated state as the certificate manager sees it:
// a CA, and a change channel that a test closes for every write.
type fakeCASource struct {
	mu      sync.Mutex
	ca      *hubpb.CAState
	changed chan struct{}
}

func newFakeCASource(t testing.TB, trustDomain string) *fakeCASource {
	t.Helper()
	ca, err := pki.NewCA(trustDomain, caTTL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := x509pem.EncodeKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeCASource{
		ca:      &hubpb.CAState{CertPem: x509pem.EncodeCerts(ca.Cert), KeyPem: keyPEM, TrustDomain: trustDomain},
		changed: make(chan struct{}),
	}
}

func (f *fakeCASource) CA() (*hubpb.CAState, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ca, f.changed
}

// write is a committed write: the state changed, the CA did not.
func (f *fakeCASource) write() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.changed)
	f.changed = make(chan struct{})
}

var _ caSource = (*fakeCASource)(nil)

func testCertIdentity(t testing.TB, ttl time.Duration) certIdentity {
	return certIdentity{
		trustDomain: "hub.meshfed", name: "s0", ips: []net.IP{net.IPv4(127, 0, 0, 1)}, ttl: ttl,
		bundleEndpoint: true, dir: t.TempDir(),
	}
}

// held is the certificate the manager holds for c.
func held(m *certManager, c *ownCert) *tls.Certificate {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return c.cert
}

// A hub with a write every few seconds still renews its server
// certificate and its bundle endpoint certificate at half-life, each on its
// own timer, certificate after certificate. (The renewal timer was rebuilt
// on every state change, so under steady writes it never fired and every
// server certificate expired 30 days after bootstrap.)
func TestServerCertificateRenewsAtHalfLifeUnderSteadyWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ttl = 2 * time.Minute
		const lifetimes = 12
		src := newFakeCASource(t, "hub.meshfed")
		m := newCertManager(testCertIdentity(t, ttl), src, slog.New(slog.DiscardHandler), nil)
		stop := make(chan struct{})
		defer close(stop)
		go m.run(stop)
		go func() { // a write every ttl/20
			for {
				select {
				case <-stop:
					return
				case <-time.After(ttl / 20):
					src.write()
				}
			}
		}()
		synctest.Wait()
		type track struct {
			c        *ownCert
			cert     *tls.Certificate
			issued   time.Time
			renewals int
		}
		var tracks []*track
		for _, c := range []*ownCert{m.server, m.bundle} {
			cert := held(m, c)
			if cert == nil {
				t.Fatalf("no %s once the CA is known", c.what)
			}
			tracks = append(tracks, &track{c: c, cert: cert, issued: time.Now()})
		}
		// The bundle endpoint certificate starts half a lifetime later: the
		// two timers are independent.
		time.Sleep(ttl / 4)
		synctest.Wait()
		if err := m.renew(m.bundle); err != nil {
			t.Fatal(err)
		}
		tracks[1].cert, tracks[1].issued = held(m, m.bundle), time.Now()
		for end := time.Now().Add(lifetimes * ttl); time.Now().Before(end); {
			time.Sleep(time.Second)
			synctest.Wait()
			for _, tr := range tracks {
				got := held(m, tr.c)
				if !time.Now().Before(got.Leaf.NotAfter) {
					t.Fatalf("at %v the %s (issued %v) has expired: %v; %d renewals so far",
						time.Since(tr.issued), tr.c.what, got.Leaf.NotBefore, got.Leaf.NotAfter, tr.renewals)
				}
				if got == tr.cert {
					continue
				}
				// Renewed: at half of the previous certificate's lifetime from its issue.
				if age := time.Since(tr.issued); age < ttl/2 || age > ttl/2+time.Second {
					t.Errorf("%s renewal %d came %v after the previous issue, want %v", tr.c.what, tr.renewals+1, age, ttl/2)
				}
				if time.Until(got.Leaf.NotAfter) != ttl {
					t.Errorf("renewed %s lives %v, want %v", tr.c.what, time.Until(got.Leaf.NotAfter), ttl)
				}
				if id, _ := pki.SPIFFEID(got.Leaf); id == nil || id.String() != tr.c.spiffeID {
					t.Errorf("renewed %s names %v, want %s", tr.c.what, id, tr.c.spiffeID)
				}
				tr.cert, tr.issued = got, time.Now()
				tr.renewals++
			}
		}
		for _, tr := range tracks {
			if tr.renewals < 2*lifetimes-1 {
				t.Errorf("%s: %d renewals in %d lifetimes, want at least %d", tr.c.what, tr.renewals, lifetimes, 2*lifetimes-1)
			}
		}
	})
}

// The bundle endpoint certificate names the hub's one bundle endpoint ID,
// the same on every server, is for serving only, and authorizes no hub
// role; each server has its own key for it.
func TestBundleEndpointCertificateIsOneIDForEveryServer(t *testing.T) {
	src := newFakeCASource(t, "hub.meshfed")
	var certs []*tls.Certificate
	for _, name := range []string{"s0", "s1"} {
		id := testCertIdentity(t, time.Hour)
		id.name = name
		m := newCertManager(id, src, slog.New(slog.DiscardHandler), nil)
		ca, _ := src.CA()
		if err := m.useCA(ca); err != nil {
			t.Fatal(err)
		}
		certs = append(certs, m.bundleEndpointCert())
	}
	want := "spiffe://hub.meshfed/bundle-endpoint"
	for i, c := range certs {
		if c == nil {
			t.Fatalf("server %d has no bundle endpoint certificate", i)
		}
		if id, _ := pki.SPIFFEID(c.Leaf); id == nil || id.String() != want {
			t.Errorf("server %d's bundle endpoint certificate names %v, want %s", i, id, want)
		}
		if !slices.Equal(c.Leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
			t.Errorf("server %d's bundle endpoint certificate has key usages %v, want server auth only", i, c.Leaf.ExtKeyUsage)
		}
	}
	if certs[0].Leaf.PublicKey.(*ecdsa.PublicKey).Equal(certs[1].Leaf.PublicKey) {
		t.Error("two servers share a bundle endpoint key")
	}
}

// A restarted server serves the certificate it persisted, and the first
// renewal after the restart still comes at that certificate's half-life.
func TestPersistedServerCertificateIsServedAndRenewed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ttl = 10 * time.Minute
		id := testCertIdentity(t, ttl)
		src := newFakeCASource(t, "hub.meshfed")
		m := newCertManager(id, src, slog.New(slog.DiscardHandler), nil)
		stop := make(chan struct{})
		go m.run(stop)
		synctest.Wait()
		_, _, first := m.current()
		close(stop)
		synctest.Wait()

		time.Sleep(ttl / 4) // down for a while
		m2 := newCertManager(id, src, slog.New(slog.DiscardHandler), nil)
		_, pool, loaded := m2.current()
		if loaded == nil || pool == nil || loaded.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
			t.Fatalf("restarted manager holds %v, want the persisted certificate %v", loaded, first.Leaf.SerialNumber)
		}
		select {
		case <-m2.haveCert:
		default:
			t.Fatal("a persisted certificate does not count as having one")
		}
		stop2 := make(chan struct{})
		defer close(stop2)
		go m2.run(stop2)
		synctest.Wait()
		if _, _, c := m2.current(); c != loaded {
			t.Fatal("the CA's arrival replaced a valid certificate it had issued")
		}
		renewedAt := waitRenewal(t, m2, loaded, ttl)
		if want := first.Leaf.NotAfter.Add(-ttl / 2); renewedAt.Before(want.Add(-time.Minute)) || renewedAt.After(want.Add(time.Second)) {
			t.Errorf("first renewal after the restart at %v, want about %v (half-life of the persisted certificate)", renewedAt, want)
		}
	})
}

// waitRenewal advances time by seconds until the manager holds a
// certificate other than cert, and returns when.
func waitRenewal(t *testing.T, m *certManager, cert *tls.Certificate, within time.Duration) time.Time {
	t.Helper()
	for end := time.Now().Add(within); time.Now().Before(end); {
		time.Sleep(time.Second)
		synctest.Wait()
		if _, _, c := m.current(); c != cert {
			return time.Now()
		}
	}
	t.Fatalf("no renewal within %v", within)
	return time.Time{}
}
