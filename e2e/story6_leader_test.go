package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/meshfed/meshfed/testenv"
)

// leaderKills is how many times TestHubLeaderKilledWhilePoliciesChange
// kills the hub's leader.
const leaderKills = 3

// reviewsTimeoutPolicy is a policy for reviews whose timeout, and so
// whose document, differs with i.
func reviewsTimeoutPolicy(i int) string {
	return fmt.Sprintf(`apiVersion: meshfed.io/v1alpha1
kind: GlobalTrafficPolicy
metadata: {name: reviews}
spec:
  host: reviews.default
  http:
  - route: [{destination: {cluster: east}}]
    timeout: %dms
`, 5000+i)
}

// retriable are the gRPC codes a client retries a write on: the hub
// could not say whether it happened (a leader change under way).
var retriable = map[codes.Code]bool{codes.Unavailable: true, codes.DeadlineExceeded: true}

// applyOutcome is one `meshfed policy apply` of the loop.
type applyOutcome struct {
	i    int
	end  time.Time
	rev  uint64     // ok
	code codes.Code // a gRPC status
	err  error      // anything else: not a clean failure
}

// TestHubLeaderKilledWhilePoliciesChange is story 6: while `meshfed policy
// apply` changes reviews' policy in a loop, one apply after the other,
// the hub's leader is SIGKILLed 3 times, each time restarted once another
// server leads and an apply got through without it. Every apply succeeds
// or fails with a retriable gRPC status (Unavailable, DeadlineExceeded):
// never another error, a usage error or a hang. The revisions of the
// applies that succeeded grow. Once the kills are over, a last apply
// succeeds, and every gateway enforces its revision.
func TestHubLeaderKilledWhilePoliciesChange(t *testing.T) {
	fed := hubs.get(t)
	baseline(t, fed, "east")
	ctx := context.Background()
	h := fed.Hub()
	t.Cleanup(func() {
		if err := startHubServers(ctx, h); err != nil {
			t.Error(err)
		}
		deletePolicy(t, fed, "reviews")
	})
	cfg, dir := operatorConfig(t, fed), t.TempDir()
	apply := func(i int) applyOutcome {
		r, err := applyPolicy(fed, cfg, dir, reviewsTimeoutPolicy(i), 30*time.Second)
		o := applyOutcome{i: i, end: time.Now(), err: err}
		switch c, ok := cliCode(r.stderr); {
		case err != nil:
		case r.exit == 0:
			o.rev, o.err = appliedRevision(r.stdout)
		case r.exit == 1 && ok:
			o.code = c
		default:
			o.err = fmt.Errorf("exit %d: %s", r.exit, r.stderr)
		}
		return o
	}

	var (
		mu       sync.Mutex
		outcomes []applyOutcome
		stop     = make(chan struct{})
		done     = make(chan struct{})
	)
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			o := apply(i)
			mu.Lock()
			outcomes = append(outcomes, o)
			mu.Unlock()
		}
	}()
	stopLoop := sync.OnceFunc(func() { close(stop); <-done })
	t.Cleanup(stopLoop)
	succeededSince := func(since time.Time) error {
		mu.Lock()
		defer mu.Unlock()
		for _, o := range outcomes {
			if o.end.After(since) && o.rev != 0 {
				return nil
			}
		}
		return errors.New("no apply succeeded yet")
	}

	for k := range leaderKills {
		var old *testenv.HubServer
		if err := testenv.WaitFor(ctx, 60*time.Second, func(ctx context.Context) error {
			l, err := h.Leader(ctx)
			old = l
			return err
		}); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		if err := old.Kill(); err != nil {
			t.Fatal(err)
		}
		var next *testenv.HubServer
		if err := testenv.WaitFor(ctx, 60*time.Second, func(ctx context.Context) error {
			l, err := h.Leader(ctx)
			if err != nil {
				return err
			}
			if l == old {
				return fmt.Errorf("%s still leads", l.ServerName())
			}
			next = l
			return succeededSince(killed)
		}); err != nil {
			t.Fatalf("kill %d of leader %s: %v", k+1, old.ServerName(), err)
		}
		t.Logf("kill %d: leader %s SIGKILLed; %s leads and took a write %v later", k+1, old.ServerName(), next.ServerName(), time.Since(killed).Round(time.Millisecond))
		if err := old.Start(); err != nil {
			t.Fatal(err)
		}
	}
	stopLoop()

	// The last apply, once the kills are over, succeeds: retried on a
	// retriable failure as a client would.
	var last applyOutcome
	if err := testenv.WaitFor(ctx, 60*time.Second, func(context.Context) error {
		last = apply(len(outcomes))
		if last.err != nil || last.rev == 0 {
			return fmt.Errorf("last apply: %v %v", last.code, last.err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	outcomes = append(outcomes, last)

	var ok, failed int
	var prev uint64
	byCode := map[codes.Code]int{}
	for _, o := range outcomes {
		switch {
		case o.err != nil:
			t.Errorf("apply %d: not a clean failure: %v", o.i, o.err)
		case o.rev != 0:
			ok++
			if o.rev <= prev {
				t.Errorf("apply %d: revision %d after %d: the revisions of successive applies went back", o.i, o.rev, prev)
			}
			prev = o.rev
		case retriable[o.code]:
			failed++
			byCode[o.code]++
		default:
			t.Errorf("apply %d: failed with %v, not a retriable status", o.i, o.code)
		}
	}
	t.Logf("%d applies across %d leader kills: %d succeeded, %d failed retriably %v", len(outcomes), leaderKills, ok, failed, byCode)
	waitPolicy(t, fed, "reviews", last.rev, 60*time.Second)
	t.Logf("every gateway enforces revision %d, the last applied", last.rev)
}
