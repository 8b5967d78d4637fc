package agent

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/trust"
)

// fakeAsker answers RotationStatus: north counts and holds the sequence
// once holds is set; east always holds it.
type fakeAsker struct {
	mu    sync.Mutex
	holds bool
	calls int
}

func (f *fakeAsker) rotationStatus(_ context.Context, seq uint64) (*fedv1.RotationStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return &fedv1.RotationStatusResponse{SequenceNumber: seq, PublishedSequence: seq, Ready: f.holds, Members: []*fedv1.MemberBundleStatus{
		{Cluster: "east", AppliedSequence: seq, Counted: true, Holds: true},
		{Cluster: "north", Counted: true, Holds: f.holds},
	}}, nil
}

func (f *fakeAsker) set(holds bool) {
	f.mu.Lock()
	f.holds = holds
	f.mu.Unlock()
}

type memRootStore struct{ data []byte }

func (s *memRootStore) Load() ([]byte, error) {
	if s.data == nil {
		return nil, trust.ErrNotFound
	}
	return s.data, nil
}
func (s *memRootStore) Save(b []byte) error { s.data = slices.Clone(b); return nil }

// startGate runs a rotation gate over a fresh root of west's, under the
// bubble's clock, with the agent's default schedule at a 1s refresh hint.
func startGate(t *testing.T, hub rotationAsker) (*Agent, *trust.RootAuthority) {
	cfg := DefaultConfig()
	cfg.BundleRefresh = time.Second
	a := &Agent{cfg: cfg, log: testLogger(t, "west")}
	a.initMetrics()
	root, err := trust.NewRootAuthority(cfg.rootConfig(spiffeid.RequireTrustDomainFromString("west.meshfed.local")), &memRootStore{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &rotationGate{a: a, root: root, hub: hub, poll: cfg.rotationPoll()}
	done := make(chan struct{})
	go func() { defer close(done); _ = g.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; _ = root.Close() })
	return a, root
}

// The gate holds the switch while a counted member lacks the new root and
// switches as soon as it holds it; with the agent's defaults the bounds
// are 3 and 12 refresh hints.
func TestRotationGateSwitchesWhenEveryMemberHoldsTheNewRoot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub := &fakeAsker{}
		a, root := startGate(t, hub)
		st, err := root.Rotate()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := st.SwitchDeadline.Sub(st.SwitchNotBefore), (MaxPrepareFactor-trust.DefaultPrepareFactor)*time.Second; got != want {
			t.Fatalf("gate window %v, want %v", got, want)
		}
		time.Sleep(8 * time.Second)
		synctest.Wait()
		if s := caRotation(a); s.Phase != "prepare" || !slices.Equal(s.WaitingFor, []string{"north"}) {
			t.Fatalf("t+8s with north lacking the root: %+v", s)
		}
		hub.set(true)
		time.Sleep(time.Second)
		synctest.Wait()
		s := caRotation(a)
		if s.Phase != "switched" || s.SwitchedAtDeadline || len(s.WaitingFor) != 0 {
			t.Fatalf("a poll after north holds the root: %+v", s)
		}
		if got := counterValue(t, a.mSwitchDeadline); got != 0 {
			t.Errorf("switches at the deadline = %v, want 0", got)
		}
	})
}

// With a member that never holds the new root, the root switches at the
// upper bound and the gate reports it once, naming the member.
func TestRotationGateReportsASwitchAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub := &fakeAsker{}
		a, root := startGate(t, hub)
		if _, err := root.Rotate(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(MaxPrepareFactor*time.Second - time.Millisecond)
		synctest.Wait()
		if s := caRotation(a); s.Phase != "prepare" {
			t.Fatalf("just before the deadline: %+v", s)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		s := caRotation(a)
		if s.Phase != "switched" || !s.SwitchedAtDeadline || !slices.Equal(s.NotHolding, []string{"north"}) {
			t.Fatalf("after the deadline: %+v", s)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := counterValue(t, a.mSwitchDeadline); got != 1 {
			t.Errorf("switches at the deadline = %v, want 1 (reported once)", got)
		}
	})
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// caRotation is what State would show as CARotation.
func caRotation(a *Agent) CARotationState {
	return a.status().rotation
}
