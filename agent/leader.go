package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/trust"
)

// Several replicas of the agent of one cluster (kubernetes source) elect a
// leader with a coordination.k8s.io Lease (Config.LeaderElection). Every
// replica runs the same Run; what differs is who writes:
//
//   - The leader alone writes to the cluster (imports, ServiceExport
//     conditions, the ConfigMap cache, the gateway bootstrap Secret) and to
//     the hub (exports, the trust bundle, bundle acks, the stated locality
//     and gateway addresses), renews the agent certificate, drives CA
//     rotations, and cleans up after a removal.
//   - A standby holds its own read-only Sync stream (no publish, no ack,
//     no locality in the hello), so its view is warm; it watches the
//     cluster with the same informers, mirrors the egress ports and
//     ClusterSetIPs the leader recorded, and serves the gateway config
//     stream, SVIDs (signed by the shared cluster CA root) and DNS from
//     that. Its credential, CA and bootstrap stores refuse saves; it
//     re-reads the credentials and the CA root every standbyReload, so it
//     follows the leader's certificate renewals and CA rotations.
//
// A standby that acquires the Lease re-reads the credentials and the CA
// root, starts writing, and reconnects to the hub as the publisher. Its
// first reconcile finds what the old leader wrote already correct (the
// same view, the egress ports read back from the ServiceImports), so
// nothing is deleted or recreated. A leader that fails to renew the Lease
// within RenewDeadline stops (Run returns ErrLeadershipLost) and is
// restarted as a standby; one that stops (SIGTERM) releases the Lease after
// its writers have stopped, so a standby takes over at once.

// Lease timings. A standby sees the Lease expire LeaseDuration after it
// last observed a renewal, which it polls every RetryPeriod stretched by
// client-go's jitter (leaderelection.JitterFactor, 1.2: up to 2.2 ×
// RetryPeriod), so a leader's death is followed within LeaseDuration +
// 2 × 2.2 × RetryPeriod by a takeover: 14.4 s with these defaults. A leader
// that cannot renew for RenewDeadline stops writing; the 3 s to
// LeaseDuration cover a slow exit and clock rate differences.
const (
	DefaultLeaseName     = "meshfed-agent"
	DefaultLeaseDuration = 10 * time.Second
	DefaultRenewDeadline = 7 * time.Second
	DefaultRetryPeriod   = time.Second
)

// standbyReload is how often a standby re-reads the stored credentials
// and CA root.
const standbyReload = 10 * time.Second

// ErrLeadershipLost is returned by Run when this replica held the Lease
// and failed to renew it: it has stopped writing, and a restart makes it
// a standby.
var ErrLeadershipLost = errors.New("agent: lost the leader Lease; restart as a standby")

// errStandby is what a standby's stores answer a save with.
var errStandby = errors.New("agent: not the leader: this replica does not write")

// LeaderElectionConfig configures the election among the agent's replicas.
type LeaderElectionConfig struct {
	// LeaseName is the Lease in Config.Namespace; empty turns election
	// off (one replica, always the leader).
	LeaseName string
	// Identity names this replica in the Lease (the pod name).
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod: see the defaults.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// enabled reports whether the replicas elect a leader.
func (c LeaderElectionConfig) enabled() bool { return c.LeaseName != "" }

func (c LeaderElectionConfig) validate(add func(field, value, reason string, args ...any), src SourceKind) {
	if !c.enabled() {
		return
	}
	if src != SourceKubernetes {
		add("leader_election.lease_name", c.LeaseName, "only with the kubernetes source (the Lease lives in the cluster)")
	}
	if c.Identity == "" {
		add("leader_election.identity", "", "required with leader election (the pod name)")
	}
	if c.RetryPeriod < 100*time.Millisecond || c.RetryPeriod > time.Minute {
		add("leader_election.retry_period", c.RetryPeriod.String(), "must be in 100ms..1m")
	}
	if float64(c.RenewDeadline) <= leaderelection.JitterFactor*float64(c.RetryPeriod) {
		add("leader_election.renew_deadline", c.RenewDeadline.String(), "must be more than %v × retry_period (%v)", leaderelection.JitterFactor, c.RetryPeriod)
	}
	if c.LeaseDuration <= c.RenewDeadline || c.LeaseDuration > 5*time.Minute {
		add("leader_election.lease_duration", c.LeaseDuration.String(), "must be more than renew_deadline (%v) and at most 5m", c.RenewDeadline)
	}
}

// role is whether this replica writes. Without election it always does.
type role struct {
	elected bool
	leading atomic.Bool
	// promoted is closed when this replica becomes the leader (at once
	// without election).
	promoted chan struct{}

	mu      sync.Mutex
	skipped map[string]bool // ServiceExports whose conditions a standby did not write
}

func newRole(elected bool) *role {
	r := &role{elected: elected, promoted: make(chan struct{}), skipped: map[string]bool{}}
	if !elected {
		r.leading.Store(true)
		close(r.promoted)
	}
	return r
}

// isLeader reports whether this replica writes now.
func (r *role) isLeader() bool { return r.leading.Load() }

// standbySkips reports whether a write of the conditions of ServiceExport
// key must be skipped, and remembers the key for the promotion.
func (r *role) standbySkips(key string) bool {
	if r.isLeader() {
		return false
	}
	r.mu.Lock()
	r.skipped[key] = true
	r.mu.Unlock()
	return true
}

// takeSkipped returns and forgets the keys standbySkips remembered.
func (r *role) takeSkipped() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := sortedKeys(r.skipped)
	r.skipped = map[string]bool{}
	return out
}

// leaderStore is a trust.Store that saves only while this replica leads.
type leaderStore struct {
	trust.Store
	role *role
}

func (s leaderStore) Save(b []byte) error {
	if !s.role.isLeader() {
		return errStandby
	}
	return s.Store.Save(b)
}

// elector runs the Lease election of cfg. promote is called (in its own
// goroutine) once this replica holds the Lease, with a context that ends
// when it stops holding it.
type elector struct {
	le *leaderelection.LeaderElector
}

func newElector(cs kubernetes.Interface, namespace string, cfg LeaderElectionConfig, promote func(ctx context.Context)) (*elector, error) {
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, namespace, cfg.LeaseName, cs.CoreV1(), cs.CoordinationV1(),
		resourcelock.ResourceLockConfig{Identity: cfg.Identity})
	if err != nil {
		return nil, fmt.Errorf("agent: leader election: %w", err)
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, Name: cfg.LeaseName,
		LeaseDuration: cfg.LeaseDuration, RenewDeadline: cfg.RenewDeadline, RetryPeriod: cfg.RetryPeriod,
		// Released only once every writer has stopped: Run cancels the
		// elector's context after its goroutines returned.
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: promote,
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("agent: leader election: %w", err)
	}
	return &elector{le: le}, nil
}

// run campaigns until ctx is done. It returns ErrLeadershipLost if this
// replica held the Lease and lost it before ctx was done.
func (e *elector) run(ctx context.Context, r *role) error {
	e.le.Run(ctx)
	if ctx.Err() == nil && r.leading.Swap(false) {
		return ErrLeadershipLost
	}
	return nil
}

// reloadCredentials adopts the stored credentials when they differ from
// the ones held (a renewal by the leader, or one in progress). force
// replaces them even when equal, which closes the Sync stream: a promoted
// replica reconnects as the publisher.
func (k *credentialKeeper) reloadCredentials(force bool) (bool, error) {
	b, err := k.store.Load()
	if err != nil {
		return false, fmt.Errorf("agent: reloading credentials: %w", err)
	}
	creds, err := decodeCredentials(b)
	if err != nil {
		return false, err
	}
	cur, _ := k.current()
	if !force && cur.Cert == creds.Cert && cur.RenewalKey == creds.RenewalKey {
		return false, nil
	}
	k.set(creds)
	return true, nil
}

// followLeader re-reads the credentials and the CA root every
// standbyReload while this replica is a standby.
func (a *Agent) followLeader(ctx context.Context, keeper *credentialKeeper, root *trust.RootAuthority) error {
	t := time.NewTicker(standbyReload)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.role.promoted:
			return nil
		case <-t.C:
		}
		if ok, err := keeper.reloadCredentials(false); err != nil {
			a.log.Warn("standby: reading the credentials", "err", err)
		} else if ok {
			a.log.Info("standby: adopted the credentials the leader stored")
		}
		if ok, err := root.Reload(); err != nil {
			a.log.Warn("standby: reading the cluster CA root", "err", err)
		} else if ok {
			a.log.Info("standby: adopted the cluster CA root the leader stored")
		}
	}
}

// promote makes this replica the leader, once the elector says it holds
// the Lease: it re-reads the CA root and the credentials the old leader
// may have changed, starts writing, and closes the Sync stream so that the
// next one publishes. The leader-only goroutines wait for role.promoted.
func (a *Agent) promote(ctx context.Context, keeper *credentialKeeper, root *trust.RootAuthority, imp *kubeImporter, boot trust.Store, token string) {
	if ctx.Err() != nil {
		return
	}
	a.log.Info("leader: this replica holds the Lease and writes", "lease", a.cfg.LeaderElection.LeaseName, "identity", a.cfg.LeaderElection.Identity)
	if _, err := root.Reload(); err != nil {
		a.log.Error("leader: reading the cluster CA root", "err", err)
	}
	a.role.leading.Store(true)
	if _, err := keeper.reloadCredentials(true); err != nil {
		a.log.Error("leader: reading the credentials", "err", err)
		keeper.set(func() *Credentials { c, _ := keeper.current(); return c }())
	}
	close(a.role.promoted)
	if err := writeGatewayBootstrap(boot, a.cfg.Cluster.String(), token, root); err != nil {
		a.log.Error("gateway bootstrap", "err", err)
	}
	if imp != nil {
		imp.signal(nil)
	}
	src := a.status().source
	if ks, ok := src.(*kubeSource); ok {
		for _, k := range a.role.takeSkipped() {
			ks.enqueueKey(k)
		}
	}
	a.reportSynced()
}

// observe is a standby's reconcile: it writes nothing, and mirrors what the
// leader wrote (the egress ports recorded on the ServiceImports, the
// derived Services' ClusterIPs) for the gateways and DNS it serves. The
// leader's first reconcile seeds the egress ports from the ServiceImports
// again (inited is reset).
func (im *kubeImporter) observe(l importListers, v *view) error {
	existing, err := l.imports.List(labelsEverything())
	if err != nil {
		return err
	}
	im.inited = false
	im.egress.mirror(egressSeed(existing))
	plans, _ := planImports(im.self, v)
	want := map[federation.ServiceKey]bool{}
	for _, p := range plans {
		if _, err := l.namespaces.Get(p.Namespace); err == nil {
			want[p.service()] = true
		}
	}
	svcs, err := l.services.List(labelsEverything())
	if err != nil {
		return err
	}
	im.setIPs(derivedClusterIPs(svcs, want))
	return nil
}
