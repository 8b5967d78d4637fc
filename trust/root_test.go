package trust

import (
	"bytes"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func testRootConfig(t testing.TB, name string, clk *fakeClock) RootConfig {
	t.Helper()
	cfg := DefaultRootConfig()
	cfg.TrustDomain = td(t, name)
	if clk != nil {
		cfg.Clock = clk.Now
	}
	return cfg
}

func testCAConfig(clk *fakeClock) CAConfig {
	cfg := DefaultCAConfig()
	if clk != nil {
		cfg.Clock = clk.Now
	}
	return cfg
}

func newRootAuthority(t testing.TB, cfg RootConfig, store Store) *RootAuthority {
	t.Helper()
	a, err := NewRootAuthority(cfg, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func mustBundleRoots(t testing.TB, a Authority) ([]*x509.Certificate, uint64) {
	t.Helper()
	b, err := a.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	seq, ok := b.SequenceNumber()
	if !ok {
		t.Fatal("bundle has no sequence number")
	}
	if h, ok := b.RefreshHint(); !ok || h <= 0 {
		t.Fatalf("bundle refresh hint = %v, %v", h, ok)
	}
	return b.X509Authorities(), seq
}

func TestRootAuthorityRotationPhases(t *testing.T) {
	clk := newFakeClock(t)
	cfg := testRootConfig(t, "west.test", clk)
	store := newMemStore(t)
	a := newRootAuthority(t, cfg, store)
	ca, err := NewCA(a, testCAConfig(clk))
	if err != nil {
		t.Fatal(err)
	}
	id := GatewayID(cfg.TrustDomain)

	st := a.Status()
	if st.Phase != PhaseStable || st.Sequence != 1 || len(st.Published) != 1 {
		t.Fatalf("initial status = %+v", st)
	}
	root0 := st.Issuing

	// Every SVID ever issued must verify against every later bundle until
	// it expires: that is what "zero failed handshakes" needs.
	var issued []*x509svid.SVID
	issue := func() *x509svid.SVID {
		t.Helper()
		s, err := ca.IssueX509SVID(id)
		if err != nil {
			t.Fatal(err)
		}
		issued = append(issued, s)
		return s
	}
	checkAll := func(when string) {
		t.Helper()
		b, err := a.Bundle()
		if err != nil {
			t.Fatal(err)
		}
		set := NewBundleSet()
		if err := set.Set(b); err != nil {
			t.Fatal(err)
		}
		now := clk.Now()
		for _, s := range issued {
			if !now.Before(s.Certificates[0].NotAfter) {
				continue
			}
			if _, _, err := x509svid.Verify(s.Certificates, set, x509svid.WithTime(now)); err != nil {
				t.Errorf("%s: unexpired SVID (serial %x) no longer verifies: %v", when, s.Certificates[0].SerialNumber, err)
			}
		}
	}
	signedBy := func(s *x509svid.SVID, root *x509.Certificate) bool {
		return s.Certificates[0].CheckSignatureFrom(root) == nil
	}

	issue()
	clk.Advance(10 * time.Minute)
	st, err = a.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != PhasePrepare || st.Sequence != 2 || len(st.Published) != 2 || !st.Issuing.Equal(root0) {
		t.Fatalf("after Rotate: %+v", st)
	}
	root1 := st.Published[1]
	if got, want := st.SwitchAt, clk.Now().Add(cfg.PrepareDuration); !got.Equal(want) {
		t.Errorf("SwitchAt = %v, want %v", got, want)
	}
	if got, want := st.RetireAt, st.SwitchAt.Add(cfg.MaxSVIDTTL+cfg.ClockSkew); !got.Equal(want) {
		t.Errorf("RetireAt = %v, want %v", got, want)
	}
	if _, err := a.Rotate(); !errors.Is(err, ErrRotationInProgress) {
		t.Errorf("second Rotate = %v, want ErrRotationInProgress", err)
	}
	roots, seq := mustBundleRoots(t, a)
	if seq != 2 || len(roots) != 2 {
		t.Errorf("phase 1 bundle: %d roots, seq %d", len(roots), seq)
	}
	if s := issue(); !signedBy(s, root0) {
		t.Error("phase 1 SVID not signed by the old root")
	}
	checkAll("phase 1")

	clk.Advance(cfg.PrepareDuration - time.Nanosecond)
	if s := issue(); !signedBy(s, root0) {
		t.Error("SVID issued just before the switch is not signed by the old root")
	}
	checkAll("just before the switch")
	clk.Advance(time.Nanosecond)
	if a.Status().Phase != PhaseSwitched {
		t.Fatalf("phase at SwitchAt = %v", a.Status().Phase)
	}
	if s := issue(); !signedBy(s, root1) {
		t.Error("phase 2 SVID not signed by the new root")
	}
	roots, seq = mustBundleRoots(t, a)
	if seq != 2 || len(roots) != 2 {
		t.Errorf("phase 2 bundle: %d roots, seq %d (the switch must not change the bundle)", len(roots), seq)
	}
	checkAll("phase 2")

	for i := 0; i < 6; i++ {
		clk.Advance((cfg.MaxSVIDTTL + cfg.ClockSkew) / 6)
		if i < 5 {
			issue()
			checkAll("during phase 2")
		}
	}
	st = a.Status()
	if st.Phase != PhaseStable || st.Sequence != 3 || len(st.Published) != 1 || !st.Published[0].Equal(root1) {
		t.Fatalf("after retirement: phase %v seq %d published %d", st.Phase, st.Sequence, len(st.Published))
	}
	checkAll("after retirement")
	if s := issue(); !signedBy(s, root1) {
		t.Error("SVID after retirement not signed by the new root")
	}
	// A second rotation can start now.
	if _, err := a.Rotate(); err != nil {
		t.Fatalf("Rotate after a finished rotation: %v", err)
	}
}

func TestRootAuthorityResumesAfterRestart(t *testing.T) {
	clk := newFakeClock(t)
	cfg := testRootConfig(t, "west.test", clk)
	store := newMemStore(t)
	a := newRootAuthority(t, cfg, store)
	before, err := a.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(cfg.PrepareDuration / 2)

	restart := func() RootStatus {
		t.Helper()
		b := newRootAuthority(t, cfg, store)
		return b.Status()
	}
	st := restart()
	if st.Phase != PhasePrepare || st.Sequence != 2 || !st.SwitchAt.Equal(before.SwitchAt) || !st.RetireAt.Equal(before.RetireAt) {
		t.Fatalf("restarted mid phase 1: %+v", st)
	}
	if !st.Published[0].Equal(before.Published[0]) || !st.Published[1].Equal(before.Published[1]) {
		t.Fatal("restart changed the published roots")
	}
	clk.Advance(cfg.PrepareDuration)
	st = restart()
	if st.Phase != PhaseSwitched || !st.Issuing.Equal(before.Published[1]) {
		t.Fatalf("restarted in phase 2: %+v", st)
	}
	clk.Advance(cfg.MaxSVIDTTL + cfg.ClockSkew)
	st = restart()
	if st.Phase != PhaseStable || st.Sequence != 3 || len(st.Published) != 1 || !st.Published[0].Equal(before.Published[1]) {
		t.Fatalf("restarted after retirement: %+v", st)
	}
	saves := store.saves
	st = restart()
	if st.Sequence != 3 || store.saves != saves {
		t.Errorf("a restart in a stable phase saved again or changed the sequence: seq %d, saves %d -> %d", st.Sequence, saves, store.saves)
	}
}

func TestRootAuthorityStoreFailures(t *testing.T) {
	clk := newFakeClock(t)
	cfg := testRootConfig(t, "west.test", clk)

	t.Run("load error is fatal", func(t *testing.T) {
		s := newMemStore(t)
		s.data = []byte("x")
		if _, err := NewRootAuthority(cfg, s); !errors.Is(err, ErrInvalidAuthority) {
			t.Errorf("corrupt state: %v, want ErrInvalidAuthority", err)
		}
		if s.saves != 0 {
			t.Error("an authority overwrote state it could not load")
		}
	})
	t.Run("state of another trust domain", func(t *testing.T) {
		s := newMemStore(t)
		newRootAuthority(t, testRootConfig(t, "east.test", clk), s)
		if _, err := NewRootAuthority(cfg, s); !errors.Is(err, ErrTrustDomainMismatch) {
			t.Errorf("got %v, want ErrTrustDomainMismatch", err)
		}
	})
	t.Run("first save fails", func(t *testing.T) {
		s := newMemStore(t)
		s.setFail(errors.New("disk full"))
		if _, err := NewRootAuthority(cfg, s); err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Errorf("got %v, want the store's error", err)
		}
	})
	t.Run("rotate save fails", func(t *testing.T) {
		s := newMemStore(t)
		a := newRootAuthority(t, cfg, s)
		s.setFail(errors.New("disk full"))
		if _, err := a.Rotate(); err == nil {
			t.Fatal("Rotate succeeded without saving")
		}
		if st := a.Status(); st.Phase != PhaseStable || st.Sequence != 1 || len(st.Published) != 1 {
			t.Errorf("a failed Rotate changed the authority: %+v", st)
		}
	})
	t.Run("compaction save fails", func(t *testing.T) {
		s := newMemStore(t)
		a := newRootAuthority(t, cfg, s)
		if _, err := a.Rotate(); err != nil {
			t.Fatal(err)
		}
		s.setFail(errors.New("disk full"))
		clk.Advance(cfg.PrepareDuration + cfg.MaxSVIDTTL + cfg.ClockSkew)
		roots, seq := mustBundleRoots(t, a)
		if len(roots) != 1 || seq != 3 {
			t.Errorf("bundle after retirement with a failing store: %d roots, seq %d; want 1, 3", len(roots), seq)
		}
		if st := a.Status(); st.LastSaveError == nil {
			t.Error("Status does not report the failed save")
		}
		s.setFail(nil)
		if st := a.Status(); st.LastSaveError != nil || st.Sequence != 3 {
			t.Errorf("after the store recovered: %+v", st)
		}
		b := newRootAuthority(t, cfg, s)
		if st := b.Status(); st.Sequence != 3 || st.Phase != PhaseStable {
			t.Errorf("restart after recovery: %+v", st)
		}
	})
}

func TestRootAuthorityAutoRotation(t *testing.T) {
	clk := newFakeClock(t)
	cfg := testRootConfig(t, "west.test", clk)
	cfg.RootTTL = 8 * time.Hour
	a := newRootAuthority(t, cfg, newMemStore(t))
	root0 := a.Status().Issuing
	life := root0.NotAfter.Sub(root0.NotBefore)
	clk.Advance(life*3/4 - cfg.ClockSkew - time.Second)
	if a.Status().Phase != PhaseStable {
		t.Fatal("rotation started before a quarter of the root's life remained")
	}
	clk.Advance(time.Second)
	st := a.Status()
	if st.Phase != PhasePrepare || st.Sequence != 2 {
		t.Fatalf("no automatic rotation with a quarter of the root's life left: %+v", st)
	}
	if !st.RetireAt.Before(root0.NotAfter) {
		t.Errorf("old root retires at %v, after it expires at %v", st.RetireAt, root0.NotAfter)
	}

	// An authority that was down past its root's expiry switches at once.
	clk2 := newFakeClock(t)
	cfg2 := testRootConfig(t, "east.test", clk2)
	cfg2.RootTTL = 8 * time.Hour
	s2 := newMemStore(t)
	newRootAuthority(t, cfg2, s2)
	clk2.Advance(9 * time.Hour)
	b := newRootAuthority(t, cfg2, s2)
	if st := b.Status(); st.Phase != PhaseSwitched || st.Issuing.NotAfter.Before(clk2.Now()) {
		t.Fatalf("expired root: %+v", st)
	}
	ca, err := NewCA(b, testCAConfig(clk2))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.IssueX509SVID(AgentID(cfg2.TrustDomain)); err != nil {
		t.Errorf("issuing after replacing an expired root: %v", err)
	}
}

func TestRootAuthorityWatchSeesRetirement(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testRootConfig(t, "west.test", nil)
		a, err := NewRootAuthority(cfg, newMemStore(t))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = a.Close() }()
		ch, stop := a.Watch()
		defer stop()
		start := time.Now()
		if _, err := a.Rotate(); err != nil {
			t.Fatal(err)
		}
		<-ch // phase 1 published
		// Nobody calls the authority: its timer must announce phase 3.
		<-ch
		if got, want := time.Since(start), cfg.PrepareDuration+cfg.MaxSVIDTTL+cfg.ClockSkew; got != want {
			t.Errorf("retirement announced after %v, want %v", got, want)
		}
		roots, seq := mustBundleRoots(t, a)
		if len(roots) != 1 || seq != 3 {
			t.Errorf("bundle after the announcement: %d roots, seq %d", len(roots), seq)
		}
	})
}

func TestRootStateEncoding(t *testing.T) {
	clk := newFakeClock(t)
	cfg := testRootConfig(t, "west.test", clk)
	s := newMemStore(t)
	a := newRootAuthority(t, cfg, s)
	if _, err := a.Rotate(); err != nil {
		t.Fatal(err)
	}
	st, err := decodeRootState(cfg.TrustDomain, s.data)
	if err != nil {
		t.Fatal(err)
	}
	again, err := encodeRootState(cfg.TrustDomain, st)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, s.data) {
		t.Errorf("re-encoding changed the state:\n%s\nvs\n%s", again, s.data)
	}
	for name, mutate := range map[string]func(string) string{
		"format":          func(s string) string { return strings.Replace(s, "Format: 1", "Format: 2", 1) },
		"unknown header":  func(s string) string { return strings.Replace(s, "Format: 1", "Format: 1\nColor: red", 1) },
		"zero sequence":   func(s string) string { return strings.Replace(s, "Sequence: 2", "Sequence: 0", 1) },
		"bad switch time": func(s string) string { return strings.Replace(s, "Switch-At: ", "Switch-At: x", 1) },
		"trailing junk":   func(s string) string { return s + "junk" },
		"role":            func(s string) string { return strings.Replace(s, "Role: next", "Role: spare", 1) },
		"missing key": func(s string) string {
			i := strings.LastIndex(s, "-----BEGIN PRIVATE KEY-----")
			return s[:i]
		},
	} {
		if _, err := decodeRootState(cfg.TrustDomain, []byte(mutate(string(s.data)))); !errors.Is(err, ErrInvalidAuthority) {
			t.Errorf("%s: decode = %v, want ErrInvalidAuthority", name, err)
		}
	}
	// Swapping the keys of the two roots must be caught.
	stSwapped := st
	stSwapped.active.key, stSwapped.next.key = st.next.key, st.active.key
	bad, err := encodeRootState(cfg.TrustDomain, stSwapped)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeRootState(cfg.TrustDomain, bad); !errors.Is(err, ErrInvalidAuthority) {
		t.Errorf("swapped keys: %v, want ErrInvalidAuthority", err)
	}
	if _, err := decodeRootState(spiffeid.RequireTrustDomainFromString("east.test"), s.data); !errors.Is(err, ErrTrustDomainMismatch) {
		t.Errorf("other trust domain: %v", err)
	}
}

func TestRootConfigValidate(t *testing.T) {
	c := DefaultRootConfig()
	err := c.Validate()
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "trust_domain") {
		t.Errorf("default config without trust domain: %v", err)
	}
	c.TrustDomain = td(t, "a.test")
	if err := c.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	for field, mutate := range map[string]func(*RootConfig){
		"max_svid_ttl":     func(c *RootConfig) { c.MaxSVIDTTL = time.Second },
		"refresh_hint":     func(c *RootConfig) { c.RefreshHint = 0 },
		"prepare_duration": func(c *RootConfig) { c.PrepareDuration = c.RefreshHint },
		"clock_skew":       func(c *RootConfig) { c.ClockSkew = -time.Second },
		"root_ttl":         func(c *RootConfig) { c.RootTTL = 2 * time.Hour },
		"clock":            func(c *RootConfig) { c.Clock = nil },
	} {
		cc := c
		mutate(&cc)
		err := cc.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != field {
			t.Errorf("%s: Validate = %v", field, err)
		}
	}
}

// readOnlyStore reads another store and refuses every save.
type readOnlyStore struct{ Store }

func (readOnlyStore) Save([]byte) error { return errors.New("read-only") }

// A replica that only reads the store follows the writer's rotation by
// Reload: it publishes the new root, is notified, and switches when the
// writer switched; a reload of the same state changes nothing.
func TestRootAuthorityReloadFollowsTheWriter(t *testing.T) {
	store := newMemStore(t)
	cfg := testRootConfig(t, "west.test", nil)
	writer := newRootAuthority(t, cfg, store)
	reader := newRootAuthority(t, cfg, readOnlyStore{store})
	changed, stop := reader.Watch()
	defer stop()

	if ok, err := reader.Reload(); ok || err != nil {
		t.Fatalf("reload of the same state: %v, %v; want no change", ok, err)
	}
	if _, err := writer.Rotate(); err != nil {
		t.Fatal(err)
	}
	if roots, _ := mustBundleRoots(t, reader); len(roots) != 1 {
		t.Fatalf("reader publishes %d roots before reloading, want 1", len(roots))
	}
	if ok, err := reader.Reload(); !ok || err != nil {
		t.Fatalf("reload after the writer rotated: %v, %v; want a change", ok, err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("reader's watchers not notified of the reloaded state")
	}
	wr, wseq := mustBundleRoots(t, writer)
	rr, rseq := mustBundleRoots(t, reader)
	if len(rr) != 2 || rseq != wseq || !rr[1].Equal(wr[1]) {
		t.Fatalf("reader bundle %d roots seq %d, writer %d roots seq %d: want the same", len(rr), rseq, len(wr), wseq)
	}
	if ok, _ := reader.Reload(); ok {
		t.Fatal("a second reload of the same state reported a change")
	}
}
