package agent

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

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
