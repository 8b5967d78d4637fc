package agent

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/leaderelection"

	"github.com/meshfed/meshfed/trust"
)

// A standby saves nothing and follows what the leader stores: every
// standbyReload it adopts renewed credentials, across many periods, and a
// rotated CA root; once promoted it stops following and its stores save.
func TestStandbyFollowsTheLeadersRenewalsAndRotationsAndSavesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newFakeHub(t, time.Hour)
		shared := &memStore{}
		creds := h.join()
		b, err := encodeCredentials(creds)
		if err != nil {
			t.Fatal(err)
		}
		if err := shared.Save(b); err != nil {
			t.Fatal(err)
		}
		caShared := &memStore{}
		cfg := DefaultConfig()
		rc := cfg.rootConfig(spiffeid.RequireTrustDomainFromString("east.meshfed.local"))
		leaderRoot, err := trust.NewRootAuthority(rc, caShared)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = leaderRoot.Close() }()

		r := newRole(true)
		standbyCreds, standbyCA := leaderStore{shared, r}, leaderStore{caShared, r}
		if err := standbyCreds.Save(b); !errors.Is(err, errStandby) {
			t.Fatalf("a standby's credentials store saved: %v", err)
		}
		root, err := trust.NewRootAuthority(rc, standbyCA)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = root.Close() }()
		keeper := newCredentialKeeper(standbyCreds, creds, h, discardLog(), time.Second, time.Minute)
		a := &Agent{role: r, log: discardLog()}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- a.followLeader(ctx, keeper, root) }()

		for i := range 20 {
			// The leader renews and stores; the standby adopts it within
			// one period, and its stream is told (changed closes).
			_, changed := keeper.current()
			next := h.join()
			nb, err := encodeCredentials(next)
			if err != nil {
				t.Fatal(err)
			}
			if err := shared.Save(nb); err != nil {
				t.Fatal(err)
			}
			time.Sleep(standbyReload)
			synctest.Wait()
			if cur, _ := keeper.current(); cur.Cert != next.Cert {
				t.Fatalf("period %d: the standby holds the old certificate one period after the leader stored a new one", i)
			}
			select {
			case <-changed:
			default:
				t.Fatalf("period %d: the standby's stream was not told of the new credentials", i)
			}
		}
		if _, err := leaderRoot.Rotate(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(standbyReload)
		synctest.Wait()
		if st, lst := root.Status(), leaderRoot.Status(); len(st.Published) != 2 || !st.Published[1].Equal(lst.Published[1]) {
			t.Fatalf("the standby publishes %d roots after the leader rotated, want the leader's 2", len(st.Published))
		}

		r.leading.Store(true)
		close(r.promoted)
		synctest.Wait()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatal("the follower still runs after the promotion")
		}
		if err := standbyCreds.Save(b); err != nil {
			t.Fatalf("the leader's store refused a save: %v", err)
		}
	})
}

// A leader that cannot renew its Lease stops within the renew deadline:
// the elector's run returns ErrLeadershipLost and the replica no longer
// writes, well before a standby may take the Lease (LeaseDuration after
// the last renewal it saw), which it then does. Driven on the fake clock
// over client-go's fake clientset, with every renewal of the leader
// failing from a point on.
func TestLeaderThatCannotRenewStopsBeforeAStandbyTakesOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cs := kubefake.NewClientset()
		var failing atomic.Bool
		renewedByA := make(chan struct{}, 1024) // one per renewal a makes
		cs.PrependReactor("update", "leases", func(action k8stesting.Action) (bool, runtime.Object, error) {
			l := action.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease)
			if !failing.Load() && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == "a" {
				select {
				case renewedByA <- struct{}{}:
				default:
				}
			}
			// Every update but b's (a's renewals, and its release of the
			// Lease once it gives up) fails, as when a is cut off from
			// the API server.
			if failing.Load() && (l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != "b") {
				return true, nil, errors.New("injected: the API server is unreachable from a")
			}
			return false, nil, nil
		})
		cfg := LeaderElectionConfig{LeaseName: DefaultLeaseName, LeaseDuration: DefaultLeaseDuration,
			RenewDeadline: DefaultRenewDeadline, RetryPeriod: DefaultRetryPeriod}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		start := func(id string) (*role, <-chan struct{}, <-chan error) {
			c := cfg
			c.Identity = id
			r := newRole(true)
			promoted := make(chan struct{})
			el, err := newElector(cs, "meshfed-system", c, func(context.Context) { r.leading.Store(true); close(promoted) })
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- el.run(ctx, r) }()
			return r, promoted, done
		}
		ra, promotedA, doneA := start("a")
		<-promotedA
		rb, promotedB, doneB := start("b")
		// b stands by through many renewals of a (a renews every retry
		// period: 100 renewals span 10 lease durations).
		for range 100 {
			<-renewedByA
		}
		synctest.Wait()
		if rb.isLeader() || !ra.isLeader() {
			t.Fatalf("after 100 renewals by a: a leads %v, b leads %v; want a alone", ra.isLeader(), rb.isLeader())
		}

		failing.Store(true)
		cut := time.Now()
		if err := <-doneA; !errors.Is(err, ErrLeadershipLost) {
			t.Fatalf("a's elector returned %v, want ErrLeadershipLost", err)
		}
		stopped := time.Since(cut)
		if ra.isLeader() {
			t.Fatal("a still writes after losing the Lease")
		}
		if stopped > cfg.RenewDeadline+cfg.RetryPeriod {
			t.Errorf("a stopped %v after its renewals began to fail, want within the renew deadline %v (+ one retry period)", stopped, cfg.RenewDeadline)
		}
		<-promotedB
		took := time.Since(cut)
		if took <= stopped {
			t.Errorf("b took over %v after the cut, before a stopped (%v): two writers", took, stopped)
		}
		// b polls every retry period stretched by up to JitterFactor: it
		// saw a's last renewal (before the cut) at most one stretched
		// period after it, and acquires at most one after the expiry.
		if bound := cfg.LeaseDuration + time.Duration(2*(1+leaderelection.JitterFactor)*float64(cfg.RetryPeriod)); took > bound {
			t.Errorf("b took over %v after the cut, want within %v", took, bound)
		}
		t.Logf("a stopped %v and b took over %v after a's renewals began to fail", stopped, took)
		cancel()
		if err := <-doneB; err != nil {
			t.Fatalf("b's elector at shutdown: %v", err)
		}
	})
}
