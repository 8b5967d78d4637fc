package hub

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/pki"
)

func TestJoinRetriedWithTheSameKeyGetsTheSameCertificate(t *testing.T) {
	h := newTestHub(t, 3)
	admin := h.Admin()
	ctx := ctxT(t, 60*time.Second)
	tok, err := admin.CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "east", TtlSeconds: 30})
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	first, _, err := joinKey(ctx, tok.GetToken(), "east", "east.meshfed.local", key)
	if err != nil {
		t.Fatal(err)
	}
	// The response was lost: the agent asks again with the same CSR key.
	again, _, err := joinKey(ctx, tok.GetToken(), "east", "east.meshfed.local", key)
	if err != nil {
		t.Fatalf("join retried with the same key: %v", err)
	}
	if again.cert.SerialNumber.Cmp(first.cert.SerialNumber) != 0 || !again.cert.NotAfter.Equal(first.cert.NotAfter) {
		t.Fatalf("retried join: serial %x until %v, want %x until %v", again.cert.SerialNumber, again.cert.NotAfter, first.cert.SerialNumber, first.cert.NotAfter)
	}
	again.t = t
	if err := syncOn(t, again, h.Server(1).GRPCAddr()); err != nil {
		t.Fatalf("Sync with the certificate of the retried join: %v", err)
	}
	// Another key is another joiner: the token is used.
	if _, _, err := joinKey(ctx, tok.GetToken(), "east", "east.meshfed.local", nil); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("join with a used token for another key: %v, want PermissionDenied", err)
	}
	// Once the cluster renewed, the join's certificate is gone for good.
	first.t = t
	if _, err := first.renew(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := joinKey(ctx, tok.GetToken(), "east", "east.meshfed.local", key); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("join retried after a renewal: %v, want PermissionDenied", err)
	}

	// Two calls at once with one token and one key: one certificate.
	tok2, err := admin.CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "west"})
	if err != nil {
		t.Fatal(err)
	}
	key2, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	got := make([]*testAgent, 4)
	errs := make([]error, 4)
	for i := range got {
		wg.Go(func() { got[i], _, errs[i] = joinKey(ctx, tok2.GetToken(), "west", "west.meshfed.local", key2) })
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil {
			t.Fatalf("concurrent join %d: %v", i, errs[i])
		}
		if got[i].cert.SerialNumber.Cmp(got[0].cert.SerialNumber) != 0 {
			t.Fatalf("concurrent joins with one key got serials %x and %x", got[0].cert.SerialNumber, got[i].cert.SerialNumber)
		}
	}
}

func TestJoinRetryEndsWhenTheTokenExpires(t *testing.T) {
	h := newTestHub(t, 1)
	ctx := ctxT(t, 30*time.Second)
	tok, err := h.Admin().CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "east", TtlSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := joinKey(ctx, tok.GetToken(), "east", "east.meshfed.local", key); err != nil {
		t.Fatal(err)
	}
	expires := time.UnixMilli(tok.GetInfo().GetExpiresAtMs())
	waitFor(t, 5*time.Second, "token expiry", func() error {
		if time.Now().Before(expires) {
			return errNotYet
		}
		return nil
	})
	if _, _, err := joinKey(ctx, tok.GetToken(), "east", "east.meshfed.local", key); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("join retried after the token expired: %v, want PermissionDenied", err)
	}
}

var errNotYet = status.Error(codes.Unavailable, "not yet")

// A bad token is refused from this server's store: with no quorum (two of
// three servers down) the answer is still PermissionDenied, not Unavailable.
func TestJoinChecksTheTokenSecretWithoutAQuorumRound(t *testing.T) {
	h := newTestHub(t, 3)
	ctx := ctxT(t, 60*time.Second)
	tok, err := h.Admin().CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "east"})
	if err != nil {
		t.Fatal(err)
	}
	h.WaitReady(10 * time.Second) // every server has applied the token
	jt, err := federation.ParseJoinToken(tok.GetToken())
	if err != nil {
		t.Fatal(err)
	}
	survivor := h.Server(0)
	h.Kill(1)
	h.Kill(2)
	wrongSecret := jt
	wrongSecret.Secret = make([]byte, len(jt.Secret))
	unknown := jt
	unknown.ID = "00000000deadbeef"
	unknown.Addrs, wrongSecret.Addrs = []string{survivor.GRPCAddr()}, []string{survivor.GRPCAddr()}
	for _, bad := range []federation.JoinToken{wrongSecret, unknown} {
		start := time.Now()
		_, _, err := join(ctx, bad.Encode(), "east")
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("join with token %s and no quorum: %v, want PermissionDenied", bad.ID, err)
		}
		if d := time.Since(start); d > tokenApplyWait+2*time.Second {
			t.Fatalf("refusing token %s took %v", bad.ID, d)
		}
	}
}

func TestJoinIsRateLimitedPerAddress(t *testing.T) {
	h := newTestHub(t, 1, func(c *Config) { c.JoinRate, c.JoinBurst = 0.01, 3 })
	ctx := ctxT(t, 30*time.Second)
	tok, err := h.Admin().CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "east"})
	if err != nil {
		t.Fatal(err)
	}
	jt, err := federation.ParseJoinToken(tok.GetToken())
	if err != nil {
		t.Fatal(err)
	}
	bad := jt
	bad.Secret = make([]byte, len(jt.Secret))
	for i := range 3 {
		if _, _, err := join(ctx, bad.Encode(), "east"); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("call %d within the burst: %v, want PermissionDenied", i, err)
		}
	}
	_, _, err = join(ctx, tok.GetToken(), "east")
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "more than 3 calls in a burst") {
		t.Fatalf("call past the burst: %v, want ResourceExhausted naming the bound", err)
	}
}

func TestIPLimiterRefillsAndStaysBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newIPLimiter(2, 4) // 2 a second, 4 at once
		for i := range 4 {
			if !l.allow("10.0.0.1") {
				t.Fatalf("call %d within the burst refused", i)
			}
		}
		if l.allow("10.0.0.1") {
			t.Fatal("call past the burst allowed")
		}
		if !l.allow("10.0.0.2") {
			t.Fatal("another address shares the first one's bucket")
		}
		for round := range 100 {
			time.Sleep(500 * time.Millisecond) // one token
			if !l.allow("10.0.0.1") {
				t.Fatalf("round %d: refused after a token refilled", round)
			}
			if l.allow("10.0.0.1") {
				t.Fatalf("round %d: two calls on one token", round)
			}
		}
		for i := range 3 * maxLimitedPeers {
			l.allow(string(rune(i)))
			if n := l.tracked(); n > maxLimitedPeers {
				t.Fatalf("tracking %d peers, at most %d", n, maxLimitedPeers)
			}
		}
	})
}

func TestReadyzAnswerIsReusedForOneSecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c readyCache
		var checks atomic.Int64
		check := func(context.Context) error {
			checks.Add(1)
			time.Sleep(50 * time.Millisecond) // a read index takes a while
			return nil
		}
		// Probes every 10 ms for 10 s: one check a second.
		for range 1000 {
			if err := c.get(t.Context(), check); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if n := checks.Load(); n < 9 || n > 11 {
			t.Fatalf("%d readiness checks for 1000 probes over 10 s, want one a second", n)
		}
		// Many probes at once after the answer aged: one check between them.
		time.Sleep(readyCacheTTL)
		before := checks.Load()
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() { _ = c.get(t.Context(), check) })
		}
		wg.Wait()
		if n := checks.Load() - before; n != 1 {
			t.Fatalf("50 concurrent probes ran %d checks, want 1", n)
		}
	})
}
