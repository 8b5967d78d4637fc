package agent

import (
	"time"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
)

// agentStatus is everything the readers of the agent's state see: /state,
// /readyz and the metrics, the DNS zone builder and the gateway config
// stream. It is one immutable value, swapped atomically: readers load it
// without a lock and never see half of a change. Writers go through
// Agent.update, which copies the current value, changes the copy and
// stores it; nothing reachable from a stored agentStatus is modified
// afterwards (maps and slices are replaced, never written in place).
type agentStatus struct {
	creds     *Credentials
	connected bool
	server    string
	// lastHeard is when the hub server last sent anything on the stream,
	// and heardBound how long that keeps the agent connected
	// (federation.HeartbeatMisses heartbeat intervals; 0: the hub sends
	// no heartbeats, connected while the stream is open).
	lastHeard  time.Time
	heardBound time.Duration
	// removed is why the hub refused this cluster as a non-member, once it
	// has ("" until then).
	removed   string
	lastErr   string
	snap      *view
	cached    bool // snap came from the on-disk cache, not this run's hub
	desired   map[string]*fedv1.ExportedService
	local     map[string]*gatewayv1.LocalService
	failures  map[string]string
	conflicts map[string]importConflict
	source    catalogSource
	importer  *kubeImporter
	rotation  CARotationState

	// Where Run's listeners are ("" before it opens them).
	httpAddr, metricsAddr, dnsAddr, gwAddr string
}

// connectedAt reports whether the agent is connected at now: a stream is
// open and synced, and the server spoke within the bound.
func (s *agentStatus) connectedAt(now time.Time) bool {
	return s.connected && (s.heardBound == 0 || now.Sub(s.lastHeard) <= s.heardBound)
}

// status returns the current state; never nil, never modified.
func (a *Agent) status() *agentStatus {
	if s := a.st.Load(); s != nil {
		return s
	}
	return &agentStatus{} // an Agent not built by New (tests)
}

// update applies change to a copy of the current state and publishes the
// copy. Writers are serialised by a.mu; readers never take it.
func (a *Agent) update(change func(*agentStatus)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	next := *a.status()
	change(&next)
	a.st.Store(&next)
}
