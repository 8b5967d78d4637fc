package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/testenv"
	"github.com/meshfed/meshfed/trust"
)

// TestRotationSwitchWaitsForMembersToHoldTheNewRoot rotates west's CA
// while north's agent is stopped (seen seconds ago, so it counts): west
// keeps issuing from its old root past PrepareDuration, waiting for north
// only (east acknowledged the new bundle); once north's agent is back and
// has applied the bundle, west switches, well before its upper bound. Real
// agents and a real hub.
func TestRotationSwitchWaitsForMembersToHoldTheNewRoot(t *testing.T) {
	fed := testenv.Start(t, testenv.Options{HubServers: 1})
	admin := adminClient(t, fed)
	ctx := context.Background()
	const refresh = 2 * time.Second
	cfgs := map[string]Config{}
	agents := map[string]*runningAgent{}
	for _, c := range []string{"east", "north", "west"} {
		cfg := fileConfig(t, c, "r-"+c, "z-"+c, t.TempDir())
		cfg.SVIDTTL, cfg.GatewaySVIDTTL = time.Minute, time.Minute
		cfg.BundleRefresh, cfg.ClockSkew = refresh, time.Second
		writeCatalog(t, cfg.SourcePath, "services: []\n")
		if err := Join(ctx, cfg, createToken(t, admin, c)); err != nil {
			t.Fatal(err)
		}
		cfgs[c] = cfg
		agents[c] = startAgent(t, cfg)
	}
	prepare, maxPrepare := trust.DefaultPrepareFactor*refresh, MaxPrepareFactor*refresh
	for _, r := range agents {
		waitState(t, r.a, 30*time.Second, func(st State) error {
			if err := connected(st); err != nil {
				return err
			}
			if n := len(r.a.snapshotBundles()); n != 3 {
				return fmt.Errorf("%d bundles, want 3", n)
			}
			return nil
		})
	}
	agents["north"].stop(t)

	start := time.Now()
	if _, err := admin.RotateCA(ctx, &fedv1.RotateCARequest{Cluster: "west"}); err != nil {
		t.Fatal(err)
	}
	west := agents["west"].a
	// Past PrepareDuration and two polls, west is still preparing, waiting
	// for north alone.
	var switchedEarly error
	waitState(t, west, 60*time.Second, func(st State) error {
		r := st.CARotation
		if time.Since(start) < prepare && r.Phase == "stable" {
			return errors.New("rotation not started")
		}
		if r.Phase != "prepare" {
			switchedEarly = fmt.Errorf("t+%v: phase %s while north has not applied the new bundle: %+v", time.Since(start), r.Phase, r)
			return nil
		}
		if !slices.Equal(r.WaitingFor, []string{"north"}) || time.Since(start) < prepare+2*west.cfg.rotationPoll() {
			return fmt.Errorf("t+%v: waiting for %v", time.Since(start), r.WaitingFor)
		}
		return nil
	})
	if switchedEarly != nil {
		t.Fatal(switchedEarly)
	}

	// north comes back, applies west's new bundle and acknowledges it:
	// west switches, not at its deadline.
	agents["north"] = startAgent(t, cfgs["north"])
	st := waitState(t, west, maxPrepare, func(st State) error {
		if st.CARotation.Phase != "switched" {
			return fmt.Errorf("t+%v: phase %s, waiting for %v", time.Since(start), st.CARotation.Phase, st.CARotation.WaitingFor)
		}
		return nil
	})
	took := time.Since(start)
	if st.CARotation.SwitchedAtDeadline || took >= maxPrepare {
		t.Fatalf("west switched at t+%v (deadline %v, SwitchedAtDeadline %v), want the release by north's ack", took, maxPrepare, st.CARotation.SwitchedAtDeadline)
	}
	t.Logf("west switched %v after the rotation started (PrepareDuration %v, upper bound %v)", took, prepare, maxPrepare)
}

// snapshotBundles returns the trust domains of the bundles in the agent's
// current view.
func (a *Agent) snapshotBundles() []string {
	snap := a.status().snap
	if snap == nil {
		return nil
	}
	return sortedKeys(snap.bundles)
}
