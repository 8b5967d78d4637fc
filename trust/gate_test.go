package trust

import (
	"crypto/x509"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// gatedConfig is a rotation gated between 15 minutes and an hour.
func gatedConfig(t testing.TB) RootConfig {
	cfg := testRootConfig(t, "west.test", nil) // Clock: time.Now, the bubble's clock
	cfg.MaxPrepareDuration = 4 * cfg.PrepareDuration
	return cfg
}

// issuer returns the root that signs SVIDs now.
func issuer(t testing.TB, a *RootAuthority) *x509.Certificate {
	t.Helper()
	ca, err := NewCA(a, DefaultCAConfig())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ca.IssueX509SVID(GatewayID(a.TrustDomain()))
	if err != nil {
		t.Fatal(err)
	}
	st := a.Status()
	for _, r := range st.Published {
		if s.Certificates[0].CheckSignatureFrom(r) == nil {
			return r
		}
	}
	t.Fatalf("SVID signed by no published root")
	return nil
}

// A gated rotation keeps the old root issuing past PrepareDuration until
// Switch is called; Switch before PrepareDuration is refused; after Switch
// the new root issues and the old one retires MaxSVIDTTL + ClockSkew later.
func TestGatedRotationWaitsForSwitchPastPrepareDuration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := gatedConfig(t)
		a := newRootAuthority(t, cfg, newMemStore(t))
		if _, err := a.Switch(); !errors.Is(err, ErrNoRotation) {
			t.Fatalf("Switch while stable = %v, want ErrNoRotation", err)
		}
		st, err := a.Rotate()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		oldRoot, newRoot := st.Published[0], st.Published[1]
		if !st.SwitchNotBefore.Equal(start.Add(cfg.PrepareDuration)) || !st.SwitchDeadline.Equal(start.Add(cfg.MaxPrepareDuration)) {
			t.Fatalf("gate bounds = %v..%v, want +%v..+%v", st.SwitchNotBefore.Sub(start), st.SwitchDeadline.Sub(start), cfg.PrepareDuration, cfg.MaxPrepareDuration)
		}

		time.Sleep(cfg.PrepareDuration - time.Second)
		if _, err := a.Switch(); !errors.Is(err, ErrSwitchTooEarly) {
			t.Fatalf("Switch before PrepareDuration = %v, want ErrSwitchTooEarly", err)
		}
		// Well past PrepareDuration, nobody said the federation holds the
		// new root: the old one still issues.
		for range 10 {
			time.Sleep(cfg.PrepareDuration / 5)
			if st := a.Status(); st.Phase != PhasePrepare {
				t.Fatalf("t+%v: phase %v, want prepare until Switch", time.Since(start), st.Phase)
			}
			if !issuer(t, a).Equal(oldRoot) {
				t.Fatalf("t+%v: the new root issues before Switch", time.Since(start))
			}
		}
		st, err = a.Switch()
		if err != nil {
			t.Fatal(err)
		}
		switched := time.Now()
		if st.Phase != PhaseSwitched || st.SwitchedAtDeadline || !st.SwitchAt.Equal(switched) || !st.RetireAt.Equal(switched.Add(cfg.MaxSVIDTTL+cfg.ClockSkew)) {
			t.Fatalf("after Switch: %+v", st)
		}
		if !issuer(t, a).Equal(newRoot) {
			t.Fatal("the old root still issues after Switch")
		}
		if _, err := a.Switch(); err != nil {
			t.Errorf("second Switch = %v, want nil (already switched)", err)
		}
		time.Sleep(cfg.MaxSVIDTTL + cfg.ClockSkew)
		if st := a.Status(); st.Phase != PhaseStable || st.Sequence != 3 || len(st.Published) != 1 || !st.Published[0].Equal(newRoot) {
			t.Fatalf("after retirement: phase %v, seq %d, %d roots", st.Phase, st.Sequence, len(st.Published))
		}
	})
}

// Without a Switch, a gated rotation switches at MaxPrepareDuration by
// itself and says so.
func TestGatedRotationSwitchesAtDeadlineWithoutSwitch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := gatedConfig(t)
		a := newRootAuthority(t, cfg, newMemStore(t))
		st, err := a.Rotate()
		if err != nil {
			t.Fatal(err)
		}
		newRoot := st.Published[1]
		time.Sleep(cfg.MaxPrepareDuration - time.Nanosecond)
		if st := a.Status(); st.Phase != PhasePrepare || st.SwitchedAtDeadline {
			t.Fatalf("just before the deadline: %+v", st)
		}
		time.Sleep(time.Nanosecond)
		st = a.Status()
		if st.Phase != PhaseSwitched || !st.SwitchedAtDeadline {
			t.Fatalf("at the deadline: phase %v, SwitchedAtDeadline %v", st.Phase, st.SwitchedAtDeadline)
		}
		if !issuer(t, a).Equal(newRoot) {
			t.Fatal("the old root still issues after the deadline")
		}
		// The authority's own timer retires the old root on time.
		ch, stop := a.Watch()
		defer stop()
		time.Sleep(cfg.MaxSVIDTTL + cfg.ClockSkew)
		synctest.Wait()
		select {
		case <-ch:
		default:
			t.Fatal("no bundle change notified at retirement")
		}
		if st := a.Status(); st.Phase != PhaseStable || st.Sequence != 3 {
			t.Fatalf("after retirement: %+v", st)
		}
	})
}

// A gated rotation is persisted: an authority restarted in phase 1 keeps
// waiting for Switch (before and after PrepareDuration), one restarted
// after Switch keeps the switch, and one restarted past the deadline has
// switched at the deadline.
func TestGatedRotationResumesAfterRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := gatedConfig(t)
		store := newMemStore(t)
		restart := func(a *RootAuthority) *RootAuthority {
			t.Helper()
			_ = a.Close()
			return newRootAuthority(t, cfg, store)
		}
		a := newRootAuthority(t, cfg, store)
		st, err := a.Rotate()
		if err != nil {
			t.Fatal(err)
		}
		want := st
		a = restart(a)
		if _, err := a.Switch(); !errors.Is(err, ErrSwitchTooEarly) {
			t.Fatalf("Switch after a restart before PrepareDuration = %v, want ErrSwitchTooEarly", err)
		}
		time.Sleep(2 * cfg.PrepareDuration)
		a = restart(a)
		st = a.Status()
		if st.Phase != PhasePrepare || !st.SwitchNotBefore.Equal(want.SwitchNotBefore) || !st.SwitchDeadline.Equal(want.SwitchDeadline) {
			t.Fatalf("restarted past PrepareDuration: %+v, want prepare with the bounds %v..%v", st, want.SwitchNotBefore, want.SwitchDeadline)
		}
		if st, err = a.Switch(); err != nil {
			t.Fatal(err)
		}
		switchAt := st.SwitchAt
		a = restart(a)
		st = a.Status()
		if st.Phase != PhaseSwitched || !st.SwitchAt.Equal(switchAt) || st.SwitchedAtDeadline || !issuer(t, a).Equal(want.Published[1]) {
			t.Fatalf("restarted after Switch: %+v", st)
		}

		// A second rotation, restarted past its deadline without a Switch.
		time.Sleep(cfg.MaxSVIDTTL + cfg.ClockSkew)
		if _, err := a.Rotate(); err != nil {
			t.Fatal(err)
		}
		_ = a.Close()
		time.Sleep(cfg.MaxPrepareDuration)
		a = newRootAuthority(t, cfg, store)
		if st := a.Status(); st.Phase != PhaseSwitched || !st.SwitchedAtDeadline {
			t.Fatalf("restarted past the deadline: phase %v, SwitchedAtDeadline %v", st.Phase, st.SwitchedAtDeadline)
		}
	})
}

// A state file of an ungated rotation carries no gate headers, and a
// tampered gate (Switch-At outside its bounds) is refused.
func TestGatedRootStateEncoding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testRootConfig(t, "west.test", nil)
		store := newMemStore(t)
		a := newRootAuthority(t, cfg, store)
		if _, err := a.Rotate(); err != nil {
			t.Fatal(err)
		}
		data, _ := store.Load()
		st, err := decodeRootState(cfg.TrustDomain, data)
		if err != nil {
			t.Fatal(err)
		}
		if st.gated() || !st.notBefore.Equal(st.switchAt) || !st.deadline.Equal(st.switchAt) {
			t.Fatalf("ungated rotation decoded as gated: %v..%v..%v", st.notBefore, st.switchAt, st.deadline)
		}
		if _, err := a.Switch(); !errors.Is(err, ErrSwitchTooEarly) {
			t.Errorf("Switch of an ungated rotation before its switch = %v, want ErrSwitchTooEarly", err)
		}

		st.notBefore = st.switchAt.Add(time.Minute)
		st.deadline = st.switchAt.Add(time.Hour)
		bad, err := encodeRootState(cfg.TrustDomain, st)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeRootState(cfg.TrustDomain, bad); !errors.Is(err, ErrInvalidAuthority) {
			t.Errorf("Switch-At before Switch-Not-Before: %v, want ErrInvalidAuthority", err)
		}
	})
}

func TestMaxPrepareDurationBelowPrepareDurationIsRefused(t *testing.T) {
	cfg := testRootConfig(t, "west.test", nil)
	cfg.MaxPrepareDuration = cfg.PrepareDuration - time.Second
	var ce *ConfigError
	if err := cfg.Validate(); !errors.As(err, &ce) || ce.Field != "max_prepare_duration" {
		t.Fatalf("Validate = %v, want a max_prepare_duration error", err)
	}
	cfg.MaxPrepareDuration = cfg.RootTTL
	if err := cfg.Validate(); !errors.As(err, &ce) || ce.Field != "root_ttl" {
		t.Fatalf("Validate with a prepare as long as the root = %v, want a root_ttl error", err)
	}
}
