package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/trust"
)

// A CA rotation waits for the federation. The cluster root's switch to a
// new root is gated (trust.RootConfig.MaxPrepareDuration): from
// PrepareDuration on, the rotation gate asks the hub (Sync.RotationStatus)
// whether every member cluster that counts has acknowledged the bundle
// that added the new root, and calls Switch when they all have. At
// MaxPrepareDuration the root switches anyway; the gate then logs a
// warning naming the members that did not hold the new root, counts it in
// meshfed_agent_ca_switches_at_deadline_total, and shows it in /state.

// MaxPrepareFactor is the cluster CA's upper bound on a rotation's prepare
// phase (trust.RootConfig.MaxPrepareDuration), in units of BundleRefresh:
// an hour with the default 5 minutes. The lower bound is
// trust.DefaultPrepareFactor (15 minutes).
const MaxPrepareFactor = 12

// rotationStatusTimeout bounds one Sync.RotationStatus call.
const rotationStatusTimeout = 10 * time.Second

// rotationPoll is how often the gate asks the hub during the prepare phase:
// the bundle refresh hint, at most 30 s.
func (c *Config) rotationPoll() time.Duration { return min(c.BundleRefresh, 30*time.Second) }

// CARotationState is the cluster CA's rotation as /state shows it.
type CARotationState struct {
	// Phase is stable, prepare or switched.
	Phase string `json:"phase"`
	// Sequence is the sequence number of the cluster's bundle.
	Sequence uint64 `json:"sequence"`
	// SwitchNotBefore and SwitchDeadline bound the switch to the new root
	// (RFC 3339; empty when stable).
	SwitchNotBefore string `json:"switchNotBefore,omitempty"`
	SwitchDeadline  string `json:"switchDeadline,omitempty"`
	// WaitingFor lists the members that count and have not acknowledged
	// the new bundle, as the hub last said (prepare phase).
	WaitingFor []string `json:"waitingFor,omitempty"`
	// SwitchedAtDeadline is set when the switch happened at the deadline;
	// NotHolding then names the members that did not hold the new root.
	SwitchedAtDeadline bool     `json:"switchedAtDeadline,omitempty"`
	NotHolding         []string `json:"notHolding,omitempty"`
	// LastError is the last failure asking the hub or switching.
	LastError string `json:"lastError,omitempty"`
}

// rotationAsker asks the hub about the caller's bundle of a sequence. The
// rotation gate calls it from its own goroutine.
type rotationAsker interface {
	rotationStatus(ctx context.Context, seq uint64) (*fedv1.RotationStatusResponse, error)
}

// hubRotationAsker asks over a connection dialled with the agent's current
// hub credentials.
type hubRotationAsker struct {
	a      *Agent
	keeper *credentialKeeper
}

var _ rotationAsker = hubRotationAsker{}

func (h hubRotationAsker) rotationStatus(ctx context.Context, seq uint64) (*fedv1.RotationStatusResponse, error) {
	creds, _ := h.keeper.current()
	conn, err := h.a.dialHub(creds)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(ctx, rotationStatusTimeout)
	defer cancel()
	return fedv1.NewSyncClient(conn).RotationStatus(ctx, &fedv1.RotationStatusRequest{SequenceNumber: seq})
}

// waitingFor lists the members that count and do not hold the sequence.
func waitingFor(resp *fedv1.RotationStatusResponse) []string {
	var out []string
	for _, m := range resp.GetMembers() {
		if m.GetCounted() && !m.GetHolds() {
			out = append(out, m.GetCluster())
		}
	}
	return out
}

// rotationGate drives the gated switch of root. It runs in its own
// goroutine until ctx is done.
type rotationGate struct {
	a     *Agent
	root  *trust.RootAuthority
	hub   rotationAsker
	poll  time.Duration
	state CARotationState // owned by run; copied to a.rotation
	// warned is the SwitchAt of the last switch at the deadline already
	// reported, so a switch is reported once.
	warned time.Time
}

func (g *rotationGate) run(ctx context.Context) error {
	changed, stop := g.root.Watch()
	defer stop()
	for {
		wait := g.step(ctx)
		var timer <-chan time.Time
		var t *time.Timer
		if wait > 0 {
			t = time.NewTimer(wait)
			timer = t.C
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-timer:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// step acts on the root's status now and returns how long to wait before
// the next step (0: until the bundle changes).
func (g *rotationGate) step(ctx context.Context) time.Duration {
	st := g.root.Status()
	defer func() { g.publish(g.root.Status()) }()
	now := time.Now()
	switch st.Phase {
	case trust.PhasePrepare:
		if now.Before(st.SwitchNotBefore) {
			return st.SwitchNotBefore.Sub(now)
		}
		resp, err := g.hub.rotationStatus(ctx, st.Sequence)
		if err != nil {
			g.state.LastError = fmt.Sprintf("asking the hub who holds bundle %d: %v", st.Sequence, err)
			g.a.log.Warn("CA rotation: cannot ask the hub who holds the new root; not switching yet", "sequence", st.Sequence, "deadline", st.SwitchDeadline, "err", err)
			return g.nextPoll(st, now)
		}
		g.state.LastError = ""
		g.state.WaitingFor = waitingFor(resp)
		if !resp.GetReady() {
			g.a.log.Info("CA rotation: waiting for members to hold the new root", "sequence", st.Sequence, "waiting_for", g.state.WaitingFor, "deadline", st.SwitchDeadline)
			return g.nextPoll(st, now)
		}
		switched, err := g.root.Switch()
		if err != nil {
			g.state.LastError = fmt.Sprintf("switching to the new root: %v", err)
			g.a.log.Error("CA rotation: switching to the new root", "err", err)
			return g.nextPoll(st, now)
		}
		g.state.WaitingFor = nil
		g.a.log.Info("CA rotation: every member holds the new root; issuing from it", "sequence", st.Sequence, "retire_at", switched.RetireAt)
		return 0
	case trust.PhaseSwitched:
		if st.SwitchedAtDeadline && !st.SwitchAt.Equal(g.warned) {
			g.warned = st.SwitchAt
			g.reportDeadline(ctx, st)
		}
	}
	g.state.WaitingFor = nil
	return 0
}

// nextPoll is when to ask again: after the poll interval, or at the
// deadline if sooner, to report a switch at the deadline at once.
func (g *rotationGate) nextPoll(st trust.RootStatus, now time.Time) time.Duration {
	return max(min(g.poll, st.SwitchDeadline.Sub(now)), time.Millisecond)
}

// reportDeadline warns that the root switched at its deadline, naming the
// members that did not hold the new root (asked again now; the last answer
// if the hub cannot be reached).
func (g *rotationGate) reportDeadline(ctx context.Context, st trust.RootStatus) {
	missing := g.state.WaitingFor
	if resp, err := g.hub.rotationStatus(ctx, st.Sequence); err == nil {
		missing = waitingFor(resp)
	} else if !errors.Is(err, context.Canceled) {
		g.state.LastError = fmt.Sprintf("asking the hub who holds bundle %d: %v", st.Sequence, err)
	}
	g.state.NotHolding = slices.Clone(missing)
	g.a.mSwitchDeadline.Inc()
	g.a.log.Warn("CA rotation: switched to the new root at the deadline; members may reject this cluster's new certificates until they hold it",
		"sequence", st.Sequence, "deadline", st.SwitchDeadline, "not_holding", missing)
}

// publish copies the gate's view for /state.
func (g *rotationGate) publish(st trust.RootStatus) {
	s := g.state
	s.Phase, s.Sequence = st.Phase.String(), st.Sequence
	s.SwitchNotBefore, s.SwitchDeadline = "", ""
	if st.Phase != trust.PhaseStable {
		s.SwitchNotBefore = st.SwitchNotBefore.UTC().Format(time.RFC3339)
		s.SwitchDeadline = st.SwitchDeadline.UTC().Format(time.RFC3339)
	}
	s.SwitchedAtDeadline = st.SwitchedAtDeadline
	if !s.SwitchedAtDeadline {
		s.NotHolding = nil
	}
	s.WaitingFor, s.NotHolding = slices.Clone(s.WaitingFor), slices.Clone(s.NotHolding)
	g.a.mWaitingMembers.Set(float64(len(s.WaitingFor)))
	g.a.update(func(st *agentStatus) { st.rotation = s })
}

func (a *Agent) initRotationMetrics() {
	a.mSwitchDeadline = prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_agent_ca_switches_at_deadline_total",
		Help: "CA rotations that switched to the new root at the upper bound of the prepare phase, before every member held it."})
	a.mWaitingMembers = prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshfed_agent_ca_rotation_waiting_members",
		Help: "Members that count and have not acknowledged the cluster's new bundle, during a CA rotation's prepare phase."})
	a.reg.MustRegister(a.mSwitchDeadline, a.mWaitingMembers)
}
