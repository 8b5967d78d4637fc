package agent

import (
	"cmp"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation/policy"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// The traffic policies the gateway replicas hold reach the hub from here
// (`meshfed policy status`): each replica's Report carries them, the
// gatewayHub keeps them per stream, and each agent replica's hub session
// forwards the set of the gateway replicas connected to it
// (GatewayPolicies) when it changes — debounced by Config.Debounce, once
// per change, not per Report — and restates it unchanged every
// GatewayPolicyRefresh, so that the hub keeps replicas that still hold what
// they held (it drops a replica fifteen minutes after its last report:
// fsm.GatewayPolicyRetention). A standby forwards too, on its read-only
// stream: gateways reach any agent replica through the Service, and the
// hub merges the reports by gateway replica. It is an observation, not a
// write to the cluster's state, so it does not break the rule that only
// the leader publishes.

// GatewayPolicyRefresh is how often the leader restates its replicas'
// policy statuses to the hub when nothing changed.
const GatewayPolicyRefresh = 5 * time.Minute

// GatewayPolicy is one traffic policy as a gateway replica holds it, as
// /state shows it.
type GatewayPolicy struct {
	Name string `json:"name"`
	// Revision is the revision in force; 0: none.
	Revision uint64 `json:"revision"`
	// RejectedRevision and Error: the latest revision the replica
	// rejected, and why (the last good one stays in force).
	RejectedRevision uint64 `json:"rejectedRevision,omitempty"`
	Error            string `json:"error,omitempty"`
}

func gatewayPolicies(ss []*fedv1.GatewayPolicyStatus) []GatewayPolicy {
	out := make([]GatewayPolicy, 0, len(ss))
	for _, s := range ss {
		out = append(out, GatewayPolicy{Name: s.GetName(), Revision: s.GetRevision(), RejectedRevision: s.GetRejectedRevision(), Error: s.GetError()})
	}
	return out
}

// policyReport returns what the connected replicas that have reported hold
// of the traffic policies, by instance (for an instance with several
// streams, the latest report), statuses by name; replicas past
// policy.MaxGatewayStatusBytes together are left out (and logged).
func (h *gatewayHub) policyReport(log *slog.Logger) *fedv1.GatewayPolicies {
	h.mu.Lock()
	latest := map[string]*gatewayStreamState{}
	for _, s := range h.streams {
		if s.statuses == nil {
			continue
		}
		if old := latest[s.Instance]; old == nil || s.Reported.After(old.Reported) {
			latest[s.Instance] = s
		}
	}
	out := &fedv1.GatewayPolicies{}
	for _, inst := range sortedKeys(latest) {
		ss := slices.Clone(latest[inst].statuses)
		slices.SortFunc(ss, func(a, b *fedv1.GatewayPolicyStatus) int { return cmp.Compare(a.GetName(), b.GetName()) })
		out.Replicas = append(out.Replicas, &fedv1.GatewayReplicaPolicies{Instance: inst, Policies: ss})
	}
	h.mu.Unlock()
	for n := len(out.Replicas); n > 0 && proto.Size(out) > policy.MaxGatewayStatusBytes; n-- {
		log.Warn("gateway policy statuses: a replica left out of the report to the hub, past the size bound",
			"instance", out.Replicas[n-1].GetInstance(), "bound_bytes", policy.MaxGatewayStatusBytes)
		out.Replicas = out.Replicas[:n-1]
	}
	return out
}

// policyForwarder decides, for one Sync stream of the leader, when to send
// the replicas' policy statuses: the first time, when they differ from what
// it last sent, and GatewayPolicyRefresh after its last send.
type policyForwarder struct {
	last *fedv1.GatewayPolicies
	at   time.Time
}

// next returns what to send given the current statuses cur at now, or nil.
func (f *policyForwarder) next(cur *fedv1.GatewayPolicies, now time.Time) *fedv1.GatewayPolicies {
	if f.last != nil && proto.Equal(f.last, cur) && now.Sub(f.at) < GatewayPolicyRefresh {
		return nil
	}
	f.last, f.at = cur, now
	return cur
}

// refreshIn is how long after now the next restatement is due; only
// meaningful once something was sent.
func (f *policyForwarder) refreshIn(now time.Time) time.Duration {
	return max(f.at.Add(GatewayPolicyRefresh).Sub(now), 0)
}
