package hub

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/pki"
)

// syncOn opens a Sync stream as a on server addr and returns its error.
func syncOn(t *testing.T, a *testAgent, addr string) error {
	t.Helper()
	conn, err := a.dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	b := *a
	b.conn = conn
	b.t = t
	st, err := b.sync(0, "")
	if err == nil {
		st.cancel()
	}
	return err
}

func TestRenewedAgentCertificateReplacesTheOldOneOnEveryServer(t *testing.T) {
	h := newTestHub(t, 3, func(c *Config) { c.AgentCertTTL = time.Hour })
	admin := h.Admin()
	old := joinCluster(t, admin, "east")
	st, err := old.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 30*time.Second)
	before := time.Now()
	renewed, err := old.renew(ctx, nil)
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	if renewed.cert.SerialNumber.Cmp(old.cert.SerialNumber) == 0 {
		t.Fatal("the renewed certificate has the old serial")
	}
	if got, want := renewed.cert.URIs[0].String(), old.cert.URIs[0].String(); got != want {
		t.Fatalf("renewed identity %s, want %s", got, want)
	}
	if life := renewed.cert.NotAfter.Sub(before); life < 59*time.Minute || life > time.Hour+time.Second {
		t.Fatalf("renewed certificate lives %v after the call, want AgentCertTTL (1h)", life)
	}
	if skew := renewed.cert.NotBefore.Sub(before); skew > 0 || skew < -maxAgentCertSkew-time.Second {
		t.Fatalf("renewed certificate valid from %v relative to the call, want at most %v before", skew, maxAgentCertSkew)
	}

	// The stream opened with the old certificate is closed.
	if _, err := st.next(func(*fedv1.SyncResponse) bool { return false }); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("stream of the old certificate after renewal: %v, want PermissionDenied", err)
	}
	for i := range 3 {
		addr := h.Server(i).GRPCAddr()
		if err := syncOn(t, old, addr); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("server %d: Sync with the old certificate: %v, want PermissionDenied", i, err)
		}
		if err := syncOn(t, renewed, addr); err != nil {
			t.Fatalf("server %d: Sync with the renewed certificate: %v", i, err)
		}
	}

	// The old certificate's renewal again (its response was lost) gives
	// the same certificate for the same key, and nothing for another key.
	again, err := old.renew(ctx, renewed.key)
	if err != nil {
		t.Fatalf("renewal retried: %v", err)
	}
	if again.cert.SerialNumber.Cmp(renewed.cert.SerialNumber) != 0 || !again.cert.NotAfter.Equal(renewed.cert.NotAfter) || !again.cert.NotBefore.Equal(renewed.cert.NotBefore) {
		t.Fatalf("retried renewal gave serial %x %v..%v, want %x %v..%v", again.cert.SerialNumber, again.cert.NotBefore, again.cert.NotAfter,
			renewed.cert.SerialNumber, renewed.cert.NotBefore, renewed.cert.NotAfter)
	}
	if _, err := old.renew(ctx, nil); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("renewal with the old certificate for another key: %v, want PermissionDenied", err)
	}

	// The renewed certificate renews in turn; then it is the old one.
	third, err := renewed.renew(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := syncOn(t, renewed, h.Server(0).GRPCAddr()); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Sync with a certificate renewed twice over: %v, want PermissionDenied", err)
	}
	if _, err := old.renew(ctx, renewed.key); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("renewal with a certificate two renewals old: %v, want PermissionDenied", err)
	}
	d, err := admin.DescribeCluster(ctx, &fedv1.DescribeClusterRequest{Name: "east"})
	if err != nil {
		t.Fatal(err)
	}
	if c := d.GetCluster(); c.GetAgentCertSerial() != third.cert.SerialNumber.Text(16) ||
		c.GetAgentCertNotAfterMs() != third.cert.NotAfter.UnixMilli() || c.GetAgentCertNotBeforeMs() != third.cert.NotBefore.UnixMilli() {
		t.Fatalf("cluster record serial %s %d..%d, want %x %d..%d", c.GetAgentCertSerial(), c.GetAgentCertNotBeforeMs(), c.GetAgentCertNotAfterMs(),
			third.cert.SerialNumber, third.cert.NotBefore.UnixMilli(), third.cert.NotAfter.UnixMilli())
	}
}

func TestConcurrentRenewalsIssueOneSerial(t *testing.T) {
	h := newTestHub(t, 3)
	cur := joinCluster(t, h.Admin(), "east")
	ctx := ctxT(t, 60*time.Second)
	for round := range 5 {
		// Two calls with one certificate and one key, as a client that
		// retries before its first call answered: one serial for both.
		key, err := pki.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		got := make([]*testAgent, 2)
		errs := make([]error, 2)
		for i := range 2 {
			wg.Go(func() {
				conn, err := cur.dial(h.Server(i).GRPCAddr())
				if err != nil {
					errs[i] = err
					return
				}
				defer func() { _ = conn.Close() }()
				b := *cur
				b.conn = conn
				got[i], errs[i] = b.renew(ctx, key)
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: renewal %d: %v", round, i, err)
			}
		}
		if got[0].cert.SerialNumber.Cmp(got[1].cert.SerialNumber) != 0 {
			t.Fatalf("round %d: concurrent renewals issued serials %x and %x", round, got[0].cert.SerialNumber, got[1].cert.SerialNumber)
		}
		cur = got[0]
		cur.t = t
	}
	if err := syncOn(t, cur, h.Server(2).GRPCAddr()); err != nil {
		t.Fatalf("Sync after 5 renewals: %v", err)
	}
}

func TestRenewRefusesABadCSR(t *testing.T) {
	h := newTestHub(t, 1)
	a := joinCluster(t, h.Admin(), "east")
	_, err := fedv1.NewSyncClient(a.conn).Renew(context.Background(), &fedv1.RenewRequest{Csr: []byte("not a csr")})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Renew(bad csr): %v, want InvalidArgument", err)
	}
	if err := syncOn(t, a, h.Server(0).GRPCAddr()); err != nil {
		t.Fatalf("a refused renewal changed the credentials: %v", err)
	}
}
