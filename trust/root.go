package trust

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// RootConfig configures a RootAuthority. Build it with DefaultRootConfig,
// set TrustDomain, and pass it to NewRootAuthority, which validates it.
type RootConfig struct {
	// TrustDomain is the trust domain the root signs for. Required; see
	// ClusterTrustDomain for the default derived from the cluster name.
	TrustDomain spiffeid.TrustDomain
	// RootTTL is the lifetime of each generated root. When less than a
	// quarter of the active root's lifetime remains, a rotation starts by
	// itself.
	RootTTL time.Duration
	// MaxSVIDTTL is the longest SVID lifetime the root signs. It decides
	// how long an old root stays in the bundle after issuance switched away
	// from it.
	MaxSVIDTTL time.Duration
	// RefreshHint is published in the bundle: how often relying parties
	// should refresh it.
	RefreshHint time.Duration
	// PrepareDuration is how long a new root is published in the bundle
	// before issuance switches to it (phase 1 of a rotation). It must cover
	// several refresh intervals so every relying party has the new root
	// before it sees a certificate signed by it.
	PrepareDuration time.Duration
	// MaxPrepareDuration is the upper bound of phase 1. Between
	// PrepareDuration and MaxPrepareDuration issuance switches only when
	// the caller says every relying party holds the new root (Switch); at
	// MaxPrepareDuration it switches anyway, and Status reports
	// SwitchedAtDeadline. Equal to PrepareDuration (the default) there is
	// no gate: issuance switches after PrepareDuration.
	MaxPrepareDuration time.Duration
	// ClockSkew is the clock disagreement tolerated between this cluster
	// and relying parties: roots are backdated by it, and an old root stays
	// published MaxSVIDTTL + ClockSkew after the switch.
	ClockSkew time.Duration
	// Clock returns the current time. Tests inject a fake clock or run
	// under testing/synctest with time.Now.
	Clock func() time.Time
}

// Defaults and bounds of RootConfig.
const (
	DefaultRootTTL     = 365 * 24 * time.Hour
	DefaultSVIDTTL     = time.Hour
	DefaultRefreshHint = 5 * time.Minute
	DefaultClockSkew   = 5 * time.Minute

	// DefaultPrepareFactor is PrepareDuration in units of RefreshHint.
	DefaultPrepareFactor = 3
	// MinPrepareFactor is the smallest PrepareDuration, in units of
	// RefreshHint.
	MinPrepareFactor = 2

	MinSVIDTTL        = time.Minute
	MaxAllowedSVIDTTL = 7 * 24 * time.Hour
	MinRefreshHint    = time.Second
	MaxRefreshHint    = 24 * time.Hour
	MaxClockSkew      = time.Hour
	MaxRootTTL        = 20 * 365 * 24 * time.Hour
)

// DefaultRootConfig returns a RootConfig with every tunable set: roots live
// a year, SVIDs at most an hour, bundles refresh every 5 minutes, a new root
// is published 15 minutes (3 refresh intervals) before it signs (no gate:
// MaxPrepareDuration equals PrepareDuration), and 5 minutes of clock skew
// are tolerated.
func DefaultRootConfig() RootConfig {
	return RootConfig{
		RootTTL:            DefaultRootTTL,
		MaxSVIDTTL:         DefaultSVIDTTL,
		RefreshHint:        DefaultRefreshHint,
		PrepareDuration:    DefaultPrepareFactor * DefaultRefreshHint,
		MaxPrepareDuration: DefaultPrepareFactor * DefaultRefreshHint,
		ClockSkew:          DefaultClockSkew,
		Clock:              time.Now,
	}
}

// Validate reports every invalid field at once, as *ConfigErrors joined
// with errors.Join.
func (c *RootConfig) Validate() error {
	var errs configErrors
	if c.TrustDomain.IsZero() {
		errs.add("trust_domain", "required")
	}
	if c.MaxSVIDTTL < MinSVIDTTL || c.MaxSVIDTTL > MaxAllowedSVIDTTL {
		errs.add("max_svid_ttl", "%v must be in %v..%v", c.MaxSVIDTTL, MinSVIDTTL, MaxAllowedSVIDTTL)
	}
	if c.RefreshHint < MinRefreshHint || c.RefreshHint > MaxRefreshHint {
		errs.add("refresh_hint", "%v must be in %v..%v", c.RefreshHint, MinRefreshHint, MaxRefreshHint)
	}
	if c.PrepareDuration < MinPrepareFactor*c.RefreshHint {
		errs.add("prepare_duration", "%v must be at least %d × refresh_hint (%v)", c.PrepareDuration, MinPrepareFactor, MinPrepareFactor*c.RefreshHint)
	}
	if c.MaxPrepareDuration < c.PrepareDuration {
		errs.add("max_prepare_duration", "%v must be at least prepare_duration (%v)", c.MaxPrepareDuration, c.PrepareDuration)
	}
	if c.ClockSkew < 0 || c.ClockSkew > MaxClockSkew {
		errs.add("clock_skew", "%v must be in 0s..%v", c.ClockSkew, MaxClockSkew)
	}
	// A rotation (the longest prepare, then the longest SVID, then the
	// skew) must fit in the last quarter of a root's life, when it starts
	// by itself.
	if minTTL := 4 * (max(c.PrepareDuration, c.MaxPrepareDuration) + c.MaxSVIDTTL + c.ClockSkew); c.RootTTL < minTTL || c.RootTTL > MaxRootTTL {
		errs.add("root_ttl", "%v must be in 4 × (max_prepare_duration + max_svid_ttl + clock_skew) (%v)..%v", c.RootTTL, minTTL, MaxRootTTL)
	}
	if c.Clock == nil {
		errs.add("clock", "required")
	}
	return errs.err()
}

// RotationPhase is where a RootAuthority is in a rotation. The numbers are
// explicit and stable.
type RotationPhase uint8

// Rotation phases, in order. A rotation goes Stable → Prepare → Switched →
// Stable.
const (
	// PhaseStable: one root, published and issuing.
	PhaseStable RotationPhase = 1
	// PhasePrepare (rotation phase 1): the new root is published next to
	// the old one; the old one still issues.
	PhasePrepare RotationPhase = 2
	// PhaseSwitched (rotation phase 2): the new root issues; the old one
	// stays published until every SVID it signed has expired (phase 3
	// removes it and returns to PhaseStable).
	PhaseSwitched RotationPhase = 3
)

// String returns "stable", "prepare", "switched", or "phase(N)".
func (p RotationPhase) String() string {
	switch p {
	case PhaseStable:
		return "stable"
	case PhasePrepare:
		return "prepare"
	case PhaseSwitched:
		return "switched"
	default:
		return fmt.Sprintf("phase(%d)", uint8(p))
	}
}

// RootStatus describes a RootAuthority at one instant.
type RootStatus struct {
	Phase RotationPhase
	// Sequence is the bundle's sequence number.
	Sequence uint64
	// Issuing is the root that signs SVIDs now.
	Issuing *x509.Certificate
	// Published lists the roots in the bundle, oldest first.
	Published []*x509.Certificate
	// SwitchAt is when issuance switches to the new root and RetireAt when
	// the old root leaves the bundle; both are zero in PhaseStable. In
	// PhasePrepare of a gated rotation SwitchAt is the deadline, unless
	// Switch brought it forward.
	SwitchAt, RetireAt time.Time
	// SwitchNotBefore and SwitchDeadline bound a gated switch (see
	// RootConfig.MaxPrepareDuration): Switch is refused before
	// SwitchNotBefore, and issuance switches by itself at SwitchDeadline.
	// Without a gate both equal SwitchAt. Zero in PhaseStable.
	SwitchNotBefore, SwitchDeadline time.Time
	// SwitchedAtDeadline is true in PhaseSwitched of a gated rotation
	// that switched at its deadline because nobody called Switch: some
	// relying party may not have held the new root.
	SwitchedAtDeadline bool
	// LastSaveError is the last error saving state that the authority
	// could work around (compacting a finished rotation or starting an
	// automatic one; both are retried), or nil.
	LastSaveError error
}

// RootAuthority is an Authority over a self-generated root CA persisted
// through a Store. It rotates with overlap (see Rotate): a new root is
// published at least PrepareDuration before it signs (at most
// MaxPrepareDuration, when a caller gates the switch with Switch), and the
// old root leaves the bundle MaxSVIDTTL + ClockSkew after the switch. The rotation schedule is
// persisted, so an authority restarted mid-rotation resumes it; phases
// advance lazily on every call, from the clock, and a timer notifies
// watchers when the bundle changes by itself.
type RootAuthority struct {
	cfg   RootConfig
	store Store
	n     notifier

	mu      sync.Mutex
	st      rootState
	saveErr error
	timer   *time.Timer
	closed  bool
}

// rootKey is one root certificate and its key.
type rootKey struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// rootState is the persisted state. With next == nil the authority is
// stable. Otherwise the bundle holds both roots, active issues before
// switchAt and next after it, and from retireAt the bundle holds only next
// with sequence seq+1 (compacting the state makes that explicit).
// switchAt starts at deadline; Switch may move it back to any instant from
// notBefore on. Without a gate notBefore == switchAt == deadline.
type rootState struct {
	seq       uint64
	active    rootKey
	next      *rootKey
	switchAt  time.Time
	retireAt  time.Time
	notBefore time.Time
	deadline  time.Time
}

// gated reports whether the rotation's switch waits for Switch.
func (s *rootState) gated() bool { return s.next != nil && s.deadline.After(s.notBefore) }

// rootView is the authority as of one instant, derived from a rootState.
type rootView struct {
	phase     RotationPhase
	seq       uint64
	issuer    rootKey
	published []*x509.Certificate
}

func (s *rootState) view(now time.Time) rootView {
	switch {
	case s.next == nil:
		return rootView{phase: PhaseStable, seq: s.seq, issuer: s.active, published: []*x509.Certificate{s.active.cert}}
	case now.Before(s.switchAt):
		return rootView{phase: PhasePrepare, seq: s.seq, issuer: s.active, published: []*x509.Certificate{s.active.cert, s.next.cert}}
	case now.Before(s.retireAt):
		return rootView{phase: PhaseSwitched, seq: s.seq, issuer: *s.next, published: []*x509.Certificate{s.active.cert, s.next.cert}}
	default:
		return rootView{phase: PhaseStable, seq: s.seq + 1, issuer: *s.next, published: []*x509.Certificate{s.next.cert}}
	}
}

// NewRootAuthority loads the authority's state from store, or, if the store
// holds none (ErrNotFound), generates a root and saves it. It fails if the
// stored state is unreadable or belongs to another trust domain: it never
// replaces a root it could not load.
func NewRootAuthority(cfg RootConfig, store Store) (*RootAuthority, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, &ConfigError{Field: "store", Reason: "required"}
	}
	a := &RootAuthority{cfg: cfg, store: store}
	data, err := store.Load()
	switch {
	case errors.Is(err, ErrNotFound):
		now := cfg.Clock()
		cert, key, err := newRoot(cfg.TrustDomain, cfg.RootTTL, cfg.ClockSkew, now)
		if err != nil {
			return nil, err
		}
		st := rootState{seq: 1, active: rootKey{cert: cert, key: key}}
		if err := a.save(st); err != nil {
			return nil, err
		}
		a.st = st
	case err != nil:
		return nil, fmt.Errorf("trust: root authority: load: %w", err)
	default:
		st, err := decodeRootState(cfg.TrustDomain, data)
		if err != nil {
			return nil, err
		}
		a.st = st
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.advanceLocked(cfg.Clock())
	return a, nil
}

// MaxSVIDTTL returns the longest SVID lifetime the authority signs.
func (a *RootAuthority) MaxSVIDTTL() time.Duration { return a.cfg.MaxSVIDTTL }

// TrustDomain returns the trust domain the authority signs for.
func (a *RootAuthority) TrustDomain() spiffeid.TrustDomain { return a.cfg.TrustDomain }

// Bundle returns the current bundle: one root, or two during a rotation,
// with the configured refresh hint and the sequence number.
func (a *RootAuthority) Bundle() (*spiffebundle.Bundle, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v := a.advanceLocked(a.cfg.Clock())
	b := spiffebundle.FromX509Authorities(a.cfg.TrustDomain, v.published)
	b.SetRefreshHint(a.cfg.RefreshHint)
	b.SetSequenceNumber(v.seq)
	return b, nil
}

// SignX509SVID signs tmpl with the root that issues now. SVIDs carry no
// intermediates: the chain is the leaf alone.
func (a *RootAuthority) SignX509SVID(tmpl *x509.Certificate, pub crypto.PublicKey) ([]*x509.Certificate, error) {
	a.mu.Lock()
	now := a.cfg.Clock()
	v := a.advanceLocked(now)
	a.mu.Unlock()
	return signLeaf(tmpl, pub, a.cfg.TrustDomain, a.cfg.MaxSVIDTTL, now, v.issuer.cert, v.issuer.key, nil)
}

// Watch returns a channel that receives after the bundle changes: when a
// rotation starts and when its old root is retired.
func (a *RootAuthority) Watch() (<-chan struct{}, func()) { return a.n.watch() }

// Rotate starts a rotation with overlap, the three phases of which are:
//
//  1. now: a new root is generated, saved, and published in the bundle
//     next to the old one (the sequence number increases); the old root
//     still issues;
//  2. after PrepareDuration: issuance switches to the new root; in a gated
//     rotation (MaxPrepareDuration > PrepareDuration) only when Switch is
//     called, and at the latest after MaxPrepareDuration;
//  3. MaxSVIDTTL + ClockSkew after the switch, when every SVID the old root
//     signed has expired: the old root leaves the bundle (the sequence
//     number increases again).
//
// It returns ErrRotationInProgress if an earlier rotation is still before
// phase 3, and the Store's error if the new state cannot be saved (then
// nothing changed). Watchers are notified.
func (a *RootAuthority) Rotate() (RootStatus, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.cfg.Clock()
	if v := a.advanceLocked(now); v.phase != PhaseStable {
		return a.statusLocked(now), fmt.Errorf("%w: phase %s, old root retires at %s", ErrRotationInProgress, v.phase, a.st.retireAt.UTC().Format(time.RFC3339))
	}
	if err := a.startRotationLocked(now, now.Add(a.cfg.PrepareDuration), now.Add(a.cfg.MaxPrepareDuration)); err != nil {
		return a.statusLocked(now), err
	}
	a.n.notify()
	return a.statusLocked(now), nil
}

// Switch switches issuance to the new root now, ahead of the deadline of a
// gated rotation (RootConfig.MaxPrepareDuration): the caller has checked
// that every relying party holds the new root. The switch is saved before
// it takes effect, so an authority restarted afterwards issues from the new
// root too. It returns ErrNoRotation in PhaseStable, ErrSwitchTooEarly
// before SwitchNotBefore (PrepareDuration after the rotation started), and
// the Store's error if the switch cannot be saved (then nothing changed).
// In PhaseSwitched it does nothing and returns no error.
func (a *RootAuthority) Switch() (RootStatus, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.cfg.Clock()
	switch v := a.advanceLocked(now); {
	case v.phase == PhaseStable:
		return a.statusLocked(now), ErrNoRotation
	case v.phase == PhaseSwitched:
		return a.statusLocked(now), nil
	case now.Before(a.st.notBefore):
		return a.statusLocked(now), fmt.Errorf("%w: not before %s (%v from now)", ErrSwitchTooEarly, a.st.notBefore.UTC().Format(time.RFC3339), a.st.notBefore.Sub(now))
	}
	st := a.st
	st.switchAt = now
	st.retireAt = now.Add(a.cfg.MaxSVIDTTL + a.cfg.ClockSkew)
	if err := a.save(st); err != nil {
		return a.statusLocked(now), err
	}
	a.st = st
	a.armLocked(now)
	return a.statusLocked(now), nil
}

// Reload reads the state from the store again and adopts it when it
// differs from the one held: for a replica that shares the store with the
// one replica that writes it (an agent standby, whose store refuses saves,
// follows the leader's rotations this way). Watchers are notified when the
// state changed. It reports whether it did; on an error nothing changed.
func (a *RootAuthority) Reload() (bool, error) {
	data, err := a.store.Load()
	if err != nil {
		return false, fmt.Errorf("trust: root authority: reload: %w", err)
	}
	st, err := decodeRootState(a.cfg.TrustDomain, data)
	if err != nil {
		return false, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if sameRootState(a.st, st) {
		return false, nil
	}
	a.st, a.saveErr = st, nil
	a.advanceLocked(a.cfg.Clock())
	a.n.notify()
	return true, nil
}

// sameRootState reports whether a and b are the same state.
func sameRootState(a, b rootState) bool {
	if a.seq != b.seq || !a.active.cert.Equal(b.active.cert) || (a.next == nil) != (b.next == nil) {
		return false
	}
	if a.next != nil && !a.next.cert.Equal(b.next.cert) {
		return false
	}
	return a.switchAt.Equal(b.switchAt) && a.retireAt.Equal(b.retireAt) && a.notBefore.Equal(b.notBefore) && a.deadline.Equal(b.deadline)
}

// Status returns the authority's phase, roots and schedule now.
func (a *RootAuthority) Status() RootStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.cfg.Clock()
	a.advanceLocked(now)
	return a.statusLocked(now)
}

// Close stops the timer that notifies watchers of scheduled bundle
// changes. The authority keeps answering calls (phases still advance
// lazily); only notifications stop.
func (a *RootAuthority) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	if a.timer != nil {
		a.timer.Stop()
	}
	return nil
}

func (a *RootAuthority) statusLocked(now time.Time) RootStatus {
	v := a.st.view(now)
	s := RootStatus{
		Phase:         v.phase,
		Sequence:      v.seq,
		Issuing:       v.issuer.cert,
		Published:     v.published,
		LastSaveError: a.saveErr,
	}
	if v.phase != PhaseStable {
		s.SwitchAt, s.RetireAt = a.st.switchAt, a.st.retireAt
		s.SwitchNotBefore, s.SwitchDeadline = a.st.notBefore, a.st.deadline
		s.SwitchedAtDeadline = v.phase == PhaseSwitched && a.st.gated() && a.st.switchAt.Equal(a.st.deadline)
	}
	return s
}

// startRotationLocked generates the next root, to switch at the earliest
// at notBefore (when Switch says so) and at the latest at deadline, and
// saves the new state before adopting it.
func (a *RootAuthority) startRotationLocked(now, notBefore, deadline time.Time) error {
	cert, key, err := newRoot(a.cfg.TrustDomain, a.cfg.RootTTL, a.cfg.ClockSkew, now)
	if err != nil {
		return err
	}
	st := rootState{
		seq:       a.st.seq + 1,
		active:    a.st.active,
		next:      &rootKey{cert: cert, key: key},
		switchAt:  deadline,
		retireAt:  deadline.Add(a.cfg.MaxSVIDTTL + a.cfg.ClockSkew),
		notBefore: notBefore,
		deadline:  deadline,
	}
	if err := a.save(st); err != nil {
		return err
	}
	a.st = st
	a.armLocked(now)
	return nil
}

// advanceLocked brings the persisted state up to date with now and returns
// the view. It compacts a finished rotation and starts an automatic one
// when the active root nears its end. If saving fails, the view is still
// correct (it derives from the old state and the clock); the error is kept
// for Status and the step is retried on the next call.
func (a *RootAuthority) advanceLocked(now time.Time) rootView {
	changed := false
	if a.st.next != nil && !now.Before(a.st.retireAt) {
		st := rootState{seq: a.st.seq + 1, active: *a.st.next}
		if err := a.save(st); err != nil {
			a.saveErr = err
			return a.st.view(now)
		}
		a.st = st
		changed = true
	}
	if a.st.next == nil && !now.Before(a.autoRotateAt()) {
		notBefore, deadline := now.Add(a.cfg.PrepareDuration), now.Add(a.cfg.MaxPrepareDuration)
		if !now.Before(a.st.active.cert.NotAfter) {
			// The active root has already expired: nothing it signs is
			// valid, so there is no overlap to protect. Switch now.
			notBefore, deadline = now, now
		}
		if err := a.startRotationLocked(now, notBefore, deadline); err != nil {
			a.saveErr = err
		} else {
			changed = true
		}
	}
	if changed {
		a.saveErr = nil
		a.n.notify()
	}
	a.armLocked(now)
	return a.st.view(now)
}

// autoRotateAt is when the active root has a quarter of its life left.
func (a *RootAuthority) autoRotateAt() time.Time {
	c := a.st.active.cert
	return c.NotAfter.Add(-c.NotAfter.Sub(c.NotBefore) / 4)
}

// armLocked sets the timer for the next scheduled bundle change, so that
// watchers hear of it without anyone calling in.
func (a *RootAuthority) armLocked(now time.Time) {
	if a.closed {
		return
	}
	at := a.autoRotateAt()
	if a.st.next != nil {
		at = a.st.retireAt
	}
	d := max(at.Sub(now), 0)
	if a.saveErr != nil {
		d = min(d, a.cfg.RefreshHint) // retry a failed save
	}
	if a.timer == nil {
		a.timer = time.AfterFunc(d, a.onTimer)
		return
	}
	a.timer.Reset(d)
}

func (a *RootAuthority) onTimer() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.closed {
		a.advanceLocked(a.cfg.Clock())
	}
}

func (a *RootAuthority) save(st rootState) error {
	data, err := encodeRootState(a.cfg.TrustDomain, st)
	if err != nil {
		return err
	}
	if err := a.store.Save(data); err != nil {
		return fmt.Errorf("trust: root authority: save: %w", err)
	}
	return nil
}

// The persisted format: a header block, then the active root's certificate
// and key, then (during a rotation) the next root's. Every block carries a
// Role header; the header block carries the format version, trust domain,
// sequence number and schedule. A gated rotation adds Switch-Not-Before and
// Switch-Deadline; without a gate both equal Switch-At and are left out,
// so the state stays readable by a build that knows no gate.
//
//	-----BEGIN MESHFED ROOT STATE-----
//	Format: 1
//	Trust-Domain: west.meshfed.local
//	Sequence: 2
//	Switch-At: 2026-01-02T03:04:05.000000006Z
//	Retire-At: 2026-01-02T04:09:05.000000006Z
//	Switch-Not-Before: 2026-01-02T02:59:05.000000006Z
//	Switch-Deadline: 2026-01-02T03:54:05.000000006Z
//
//	-----END MESHFED ROOT STATE-----
//	-----BEGIN CERTIFICATE-----
//	Role: active
//	...
const (
	pemRootState      = "MESHFED ROOT STATE"
	rootStateFormat   = "1"
	hdrFormat         = "Format"
	hdrTrustDomain    = "Trust-Domain"
	hdrSequence       = "Sequence"
	hdrSwitchAt       = "Switch-At"
	hdrRetireAt       = "Retire-At"
	hdrNotBefore      = "Switch-Not-Before"
	hdrDeadline       = "Switch-Deadline"
	hdrRole           = "Role"
	roleActive        = "active"
	roleNext          = "next"
	maxRootStateBytes = 64 << 10
)

func encodeRootState(td spiffeid.TrustDomain, st rootState) ([]byte, error) {
	var buf bytes.Buffer
	hdr := map[string]string{
		hdrFormat:      rootStateFormat,
		hdrTrustDomain: td.Name(),
		hdrSequence:    strconv.FormatUint(st.seq, 10),
	}
	if st.next != nil {
		hdr[hdrSwitchAt] = st.switchAt.UTC().Format(time.RFC3339Nano)
		hdr[hdrRetireAt] = st.retireAt.UTC().Format(time.RFC3339Nano)
		if st.gated() {
			hdr[hdrNotBefore] = st.notBefore.UTC().Format(time.RFC3339Nano)
			hdr[hdrDeadline] = st.deadline.UTC().Format(time.RFC3339Nano)
		}
	}
	if err := pem.Encode(&buf, &pem.Block{Type: pemRootState, Headers: hdr}); err != nil {
		return nil, fmt.Errorf("trust: encode root state: %w", err)
	}
	keys := []struct {
		role string
		k    *rootKey
	}{{roleActive, &st.active}, {roleNext, st.next}}
	for _, rk := range keys {
		if rk.k == nil {
			continue
		}
		der, err := x509.MarshalPKCS8PrivateKey(rk.k.key)
		if err != nil {
			return nil, fmt.Errorf("trust: encode root state: %w", err)
		}
		role := map[string]string{hdrRole: rk.role}
		if err := pem.Encode(&buf, &pem.Block{Type: pemCertificate, Headers: role, Bytes: rk.k.cert.Raw}); err != nil {
			return nil, fmt.Errorf("trust: encode root state: %w", err)
		}
		if err := pem.Encode(&buf, &pem.Block{Type: pemPKCS8Key, Headers: role, Bytes: der}); err != nil {
			return nil, fmt.Errorf("trust: encode root state: %w", err)
		}
	}
	return buf.Bytes(), nil
}

// decodeRootState parses what encodeRootState wrote, strictly: the first
// block must be the header of format 1 for trust domain td; then exactly
// one certificate and one key per role, the active pair required, each a
// self-signed CA of td whose key matches. Errors match ErrInvalidAuthority
// (and ErrTrustDomainMismatch for state of another trust domain).
func decodeRootState(td spiffeid.TrustDomain, data []byte) (rootState, error) {
	bad := func(format string, args ...any) (rootState, error) {
		return rootState{}, fmt.Errorf("%w: stored root state: %s", ErrInvalidAuthority, fmt.Sprintf(format, args...))
	}
	if len(data) > maxRootStateBytes {
		return bad("%d bytes, at most %d", len(data), maxRootStateBytes)
	}
	hdr, rest := pem.Decode(data)
	if hdr == nil || hdr.Type != pemRootState {
		return bad("must start with a %q PEM block", pemRootState)
	}
	if f := hdr.Headers[hdrFormat]; f != rootStateFormat {
		return bad("format %q is not supported (want %q)", f, rootStateFormat)
	}
	if got := hdr.Headers[hdrTrustDomain]; got != td.Name() {
		return rootState{}, fmt.Errorf("%w: %w: stored root state is for trust domain %q, not %q", ErrInvalidAuthority, ErrTrustDomainMismatch, got, td.Name())
	}
	for name := range hdr.Headers {
		switch name {
		case hdrFormat, hdrTrustDomain, hdrSequence, hdrSwitchAt, hdrRetireAt, hdrNotBefore, hdrDeadline:
		default:
			return bad("unknown header %q", name)
		}
	}
	if len(hdr.Bytes) != 0 {
		return bad("unexpected content in the %q block", pemRootState)
	}
	var st rootState
	seq, err := strconv.ParseUint(hdr.Headers[hdrSequence], 10, 64)
	if err != nil || seq == 0 || seq == 1<<64-1 {
		return bad("sequence %q must be an integer in 1..%d", hdr.Headers[hdrSequence], uint64(1<<64-2))
	}
	st.seq = seq
	certs := map[string]*x509.Certificate{}
	keys := map[string]crypto.Signer{}
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		role := block.Headers[hdrRole]
		if role != roleActive && role != roleNext {
			return bad("block %q has role %q, want %q or %q", block.Type, role, roleActive, roleNext)
		}
		if len(block.Headers) != 1 {
			return bad("block %q (%s) has unexpected headers", block.Type, role)
		}
		switch block.Type {
		case pemCertificate:
			if certs[role] != nil {
				return bad("two %s certificates", role)
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return bad("%s certificate: %v", role, err)
			}
			certs[role] = c
		case pemPKCS8Key:
			if keys[role] != nil {
				return bad("two %s keys", role)
			}
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return bad("%s key: %v", role, err)
			}
			s, err := checkSigner(k)
			if err != nil {
				return bad("%s key: %v", role, err)
			}
			keys[role] = s
		default:
			return bad("unexpected PEM block %q", block.Type)
		}
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return bad("%d bytes of non-PEM data", len(bytes.TrimSpace(rest)))
	}
	for _, role := range []string{roleActive, roleNext} {
		c, k := certs[role], keys[role]
		if c == nil && k == nil && role == roleNext {
			continue
		}
		if c == nil || k == nil {
			return bad("the %s root needs both a certificate and a key", role)
		}
		if err := checkStoredRoot(td, c, k); err != nil {
			return bad("%s root: %v", role, err)
		}
		rk := &rootKey{cert: c, key: k}
		if role == roleActive {
			st.active = *rk
		} else {
			st.next = rk
		}
	}
	switchAt, hasSwitch := hdr.Headers[hdrSwitchAt]
	retireAt, hasRetire := hdr.Headers[hdrRetireAt]
	notBefore, hasNotBefore := hdr.Headers[hdrNotBefore]
	deadline, hasDeadline := hdr.Headers[hdrDeadline]
	if st.next == nil {
		if hasSwitch || hasRetire || hasNotBefore || hasDeadline {
			return bad("%s, %s, %s or %s set without a next root", hdrSwitchAt, hdrRetireAt, hdrNotBefore, hdrDeadline)
		}
		return st, nil
	}
	if st.switchAt, err = time.Parse(time.RFC3339Nano, switchAt); err != nil {
		return bad("%s: %v", hdrSwitchAt, err)
	}
	if st.retireAt, err = time.Parse(time.RFC3339Nano, retireAt); err != nil {
		return bad("%s: %v", hdrRetireAt, err)
	}
	if st.retireAt.Before(st.switchAt) {
		return bad("%s is before %s", hdrRetireAt, hdrSwitchAt)
	}
	st.notBefore, st.deadline = st.switchAt, st.switchAt
	if hasNotBefore != hasDeadline {
		return bad("%s and %s go together", hdrNotBefore, hdrDeadline)
	}
	if hasNotBefore {
		if st.notBefore, err = time.Parse(time.RFC3339Nano, notBefore); err != nil {
			return bad("%s: %v", hdrNotBefore, err)
		}
		if st.deadline, err = time.Parse(time.RFC3339Nano, deadline); err != nil {
			return bad("%s: %v", hdrDeadline, err)
		}
		if st.switchAt.Before(st.notBefore) || st.deadline.Before(st.switchAt) {
			return bad("%s must be in %s..%s", hdrSwitchAt, hdrNotBefore, hdrDeadline)
		}
	}
	return st, nil
}

// checkStoredRoot checks that c is a self-signed CA certificate of td and
// that k is its key.
func checkStoredRoot(td spiffeid.TrustDomain, c *x509.Certificate, k crypto.Signer) error {
	if !c.BasicConstraintsValid || !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("not a CA certificate with keyCertSign")
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		return fmt.Errorf("not self-signed: %w", err)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != td.IDString() {
		return fmt.Errorf("%w: URI SAN must be exactly %s", ErrTrustDomainMismatch, td.IDString())
	}
	if !keyMatches(k, c) {
		return errors.New("key does not match the certificate")
	}
	return nil
}
