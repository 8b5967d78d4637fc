package fsm

import (
	"cmp"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/hub/state"
)

// Gateway policy statuses (ReportGatewayPolicies, type 20): what each
// gateway replica of a member holds of the traffic policies, for
// `meshfed policy status`.
const (
	// MaxGatewayReplicas bounds the replicas of one report and the
	// replicas kept for one cluster (the newest reported first): an agent
	// serves at most as many gateway streams (agent.MaxGatewayStreams).
	MaxGatewayReplicas = 64
	// MaxGatewayInstanceBytes bounds a replica's instance name (a pod
	// name), as the agent's gateway API does.
	MaxGatewayInstanceBytes = 253
	// GatewayPolicyRetention is how long a replica is kept after it was
	// last reported: an agent restates its replicas every few minutes
	// (agent.GatewayPolicyRefresh), so a replica older than this has gone
	// (or its agent has). Every ReportGatewayPolicies prunes every
	// cluster's replicas by its now_ms.
	GatewayPolicyRetention = 15 * time.Minute
)

// CheckGatewayReplicas checks what the store relies on in a report of
// gateway replicas: at most MaxGatewayReplicas, each with an instance name
// of 1 to MaxGatewayInstanceBytes bytes, once. The statuses themselves are
// checked by the hub's handler (federation/policy CheckStatuses) before a
// command is proposed, since a rule that changed between builds would make
// Apply diverge.
func CheckGatewayReplicas(replicas []*fedv1.GatewayReplicaPolicies) *Error {
	if n := len(replicas); n > MaxGatewayReplicas {
		return refuse(codes.InvalidArgument, "replicas: %d, at most %d", n, MaxGatewayReplicas)
	}
	seen := make(map[string]int, len(replicas))
	for i, r := range replicas {
		if n := len(r.GetInstance()); n == 0 || n > MaxGatewayInstanceBytes {
			return refuse(codes.InvalidArgument, "replicas[%d].instance: %d bytes, want 1 to %d", i, n, MaxGatewayInstanceBytes)
		}
		if j, dup := seen[r.GetInstance()]; dup {
			return refuse(codes.InvalidArgument, "replicas[%d].instance: %q is also replicas[%d]", i, r.GetInstance(), j)
		}
		seen[r.GetInstance()] = i
	}
	return nil
}

// applyReportGatewayPolicies records a member's gateway replicas: each
// listed replica replaces its row, stamped now_ms; replicas not listed are
// kept until GatewayPolicyRetention after they were last reported, so
// that a replica that went away shows as last seen for a while (and so
// that several reports, each of some replicas, add up). It is
// bookkeeping: no revision, no stream wakes.
func applyReportGatewayPolicies(w *state.WriteTxn, c *hubpb.CmdReportGatewayPolicies) *Error {
	name, now := c.GetCluster(), c.GetNowMs()
	if w.Cluster(name) == nil {
		return refuse(codes.NotFound, "cluster %q: not a member", name)
	}
	if err := CheckGatewayReplicas(c.GetReplicas()); err != nil {
		return err
	}
	byInstance := map[string]*fedv1.GatewayReplicaPolicies{}
	for _, r := range w.GatewayPolicies(name).GetReplicas() {
		byInstance[r.GetInstance()] = r
	}
	for _, r := range c.GetReplicas() {
		r = proto.Clone(r).(*fedv1.GatewayReplicaPolicies)
		r.ReportedMs = now
		byInstance[r.GetInstance()] = r
	}
	kept := make([]*fedv1.GatewayReplicaPolicies, 0, len(byInstance))
	for _, r := range byInstance {
		if !expired(r, now) {
			kept = append(kept, r)
		}
	}
	if len(kept) > MaxGatewayReplicas {
		// The newest reported first, then by instance: deterministic.
		slices.SortFunc(kept, func(a, b *fedv1.GatewayReplicaPolicies) int {
			return cmp.Or(cmp.Compare(b.GetReportedMs(), a.GetReportedMs()), cmp.Compare(a.GetInstance(), b.GetInstance()))
		})
		kept = kept[:MaxGatewayReplicas]
	}
	slices.SortFunc(kept, func(a, b *fedv1.GatewayReplicaPolicies) int { return cmp.Compare(a.GetInstance(), b.GetInstance()) })
	if len(kept) > 0 {
		w.PutGatewayPolicies(&hubpb.ClusterGatewayPolicies{Cluster: name, Replicas: kept})
	} else {
		w.DeleteGatewayPolicies(name)
	}
	pruneGatewayPolicies(w, name, now)
	return nil
}

func expired(r *fedv1.GatewayReplicaPolicies, now int64) bool {
	return now-r.GetReportedMs() > GatewayPolicyRetention.Milliseconds()
}

// pruneGatewayPolicies drops the replicas of clusters other than except
// last reported more than GatewayPolicyRetention before now, and the rows
// of clusters left with none.
func pruneGatewayPolicies(w *state.WriteTxn, except string, now int64) {
	for _, g := range w.AllGatewayPolicies() {
		if g.GetCluster() == except {
			continue
		}
		kept := slices.DeleteFunc(slices.Clone(g.GetReplicas()), func(r *fedv1.GatewayReplicaPolicies) bool { return expired(r, now) })
		switch {
		case len(kept) == 0:
			w.DeleteGatewayPolicies(g.GetCluster())
		case len(kept) < len(g.GetReplicas()):
			w.PutGatewayPolicies(&hubpb.ClusterGatewayPolicies{Cluster: g.GetCluster(), Replicas: kept})
		}
	}
}
