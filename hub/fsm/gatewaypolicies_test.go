package fsm_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
)

func gwReport(cluster string, now int64, replicas ...*fedv1.GatewayReplicaPolicies) *hubpb.CmdReportGatewayPolicies {
	return &hubpb.CmdReportGatewayPolicies{Cluster: cluster, NowMs: now, Replicas: replicas}
}

func replica(instance string, statuses ...*fedv1.GatewayPolicyStatus) *fedv1.GatewayReplicaPolicies {
	return &fedv1.GatewayReplicaPolicies{Instance: instance, Policies: statuses}
}

// replicasOf is cluster's recorded replicas as "instance@reported_ms:
// name=revision[!rejected]" lines, in the stored order.
func (h *testFSM) replicasOf(cluster string) string {
	var out []string
	for _, r := range h.read().GatewayPolicies(cluster).GetReplicas() {
		s := fmt.Sprintf("%s@%d:", r.GetInstance(), r.GetReportedMs())
		for _, p := range r.GetPolicies() {
			s += fmt.Sprintf(" %s=%d", p.GetName(), p.GetRevision())
			if p.GetRejectedRevision() != 0 {
				s += fmt.Sprintf("!%d(%s)", p.GetRejectedRevision(), p.GetError())
			}
		}
		out = append(out, s)
	}
	return strings.Join(out, "; ")
}

// A report replaces the listed replicas' rows, stamped with its now_ms,
// keeps the others until they are GatewayPolicyRetention old, and is
// bookkeeping: no revision, no delta, nobody woken.
func TestReportGatewayPoliciesIsBookedAndAgesOutReplicas(t *testing.T) {
	h := newTestFSM(t)
	h.joined("east")
	h.joined("west")
	rev := h.read().Revision()
	watch := h.Store().Watch()
	retention := fsm.GatewayPolicyRetention.Milliseconds()

	h.mustApply(fsm.ReportGatewayPoliciesType, gwReport("east", 1000,
		replica("gw-b", &fedv1.GatewayPolicyStatus{Name: "reviews", Revision: 5}),
		replica("gw-a", &fedv1.GatewayPolicyStatus{Name: "reviews", Revision: 5, RejectedRevision: 7, Error: "bad"})))
	if got, want := h.replicasOf("east"), "gw-a@1000: reviews=5!7(bad); gw-b@1000: reviews=5"; got != want {
		t.Fatalf("east: %s, want %s", got, want)
	}
	if h.read().Revision() != rev || !h.read().Changes(rev).Empty() || closed(watch) {
		t.Error("a gateway policy report moved the revision, made a delta or woke a watcher")
	}

	// gw-a reports again; gw-b, not listed, keeps its last report.
	h.mustApply(fsm.ReportGatewayPoliciesType, gwReport("east", 2000, replica("gw-a", &fedv1.GatewayPolicyStatus{Name: "reviews", Revision: 7})))
	if got, want := h.replicasOf("east"), "gw-a@2000: reviews=7; gw-b@1000: reviews=5"; got != want {
		t.Errorf("east after gw-a's report: %s, want %s", got, want)
	}
	// At exactly the retention gw-b is kept; a millisecond later it goes.
	h.mustApply(fsm.ReportGatewayPoliciesType, gwReport("east", 1000+retention, replica("gw-a")))
	if got, want := h.replicasOf("east"), fmt.Sprintf("gw-a@%d:; gw-b@1000: reviews=5", 1000+retention); got != want {
		t.Errorf("east at the retention: %s, want %s", got, want)
	}
	h.mustApply(fsm.ReportGatewayPoliciesType, gwReport("east", 1001+retention, replica("gw-a")))
	if got, want := h.replicasOf("east"), fmt.Sprintf("gw-a@%d:", 1001+retention); got != want {
		t.Errorf("east past the retention: %s, want %s", got, want)
	}

	// Another cluster's report prunes west's replicas too, and west's
	// row goes once it has none.
	h.mustApply(fsm.ReportGatewayPoliciesType, gwReport("west", 5000, replica("gw-0")))
	h.mustApply(fsm.ReportGatewayPoliciesType, gwReport("east", 5001+retention, replica("gw-a")))
	if h.read().GatewayPolicies("west") != nil {
		t.Errorf("west kept %s after its replicas aged out", h.replicasOf("west"))
	}
	// A report of no replica, once the others aged out, leaves no row.
	h.mustApply(fsm.ReportGatewayPoliciesType, gwReport("east", 5002+2*retention))
	if h.read().GatewayPolicies("east") != nil {
		t.Errorf("east kept %s", h.replicasOf("east"))
	}
	if h.read().Revision() != rev {
		t.Error("gateway policy reports moved the revision")
	}
}

func TestReportGatewayPoliciesBounds(t *testing.T) {
	h := newTestFSM(t)
	h.joined("east")
	wantCode(t, "a non-member", h.apply(fsm.ReportGatewayPoliciesType, gwReport("south", 1, replica("gw-0"))), codes.NotFound)
	wantCode(t, "no instance", h.apply(fsm.ReportGatewayPoliciesType, gwReport("east", 1, replica(""))), codes.InvalidArgument)
	wantCode(t, "a long instance", h.apply(fsm.ReportGatewayPoliciesType, gwReport("east", 1, replica(strings.Repeat("g", fsm.MaxGatewayInstanceBytes+1)))), codes.InvalidArgument)
	wantCode(t, "an instance twice", h.apply(fsm.ReportGatewayPoliciesType, gwReport("east", 1, replica("gw-0"), replica("gw-0"))), codes.InvalidArgument)
	many := gwReport("east", 1)
	for i := range fsm.MaxGatewayReplicas + 1 {
		many.Replicas = append(many.Replicas, replica(fmt.Sprintf("gw-%03d", i)))
	}
	wantCode(t, "too many replicas", h.apply(fsm.ReportGatewayPoliciesType, many), codes.InvalidArgument)
	if h.read().GatewayPolicies("east") != nil {
		t.Error("a refused report was recorded")
	}

	// Reports that add up past MaxGatewayReplicas keep the newest (and,
	// among equally old ones, the first by name).
	many.Replicas = many.Replicas[:fsm.MaxGatewayReplicas]
	h.mustApply(fsm.ReportGatewayPoliciesType, many)
	h.mustApply(fsm.ReportGatewayPoliciesType, gwReport("east", 2, replica("gw-new")))
	rs := h.read().GatewayPolicies("east").GetReplicas()
	last := fmt.Sprintf("gw-%03d", fsm.MaxGatewayReplicas-2)
	if len(rs) != fsm.MaxGatewayReplicas || rs[len(rs)-2].GetInstance() != last || rs[len(rs)-1].GetInstance() != "gw-new" {
		t.Errorf("%d replicas ending %s, %s; want %d ending %s, gw-new", len(rs), rs[len(rs)-2].GetInstance(), rs[len(rs)-1].GetInstance(), fsm.MaxGatewayReplicas, last)
	}
}

// A removed cluster's replicas go with it; snapshots carry them.
func TestGatewayPoliciesGoWithTheClusterAndSurviveASnapshot(t *testing.T) {
	h := newTestFSM(t)
	h.joined("east")
	h.joined("west")
	h.mustApply(fsm.ReportGatewayPoliciesType, gwReport("east", 10, replica("gw-0", &fedv1.GatewayPolicyStatus{Name: "reviews", Revision: 3})))
	h.mustApply(fsm.ReportGatewayPoliciesType, gwReport("west", 20, replica("gw-0"), replica("gw-1")))
	f := restored(t, persist(t, h.FSM))
	sameFSM(t, h.FSM, f)
	if n := len(f.Store().Read().AllGatewayPolicies()); n != 2 {
		t.Errorf("the restored FSM holds %d clusters' gateway policies, want 2", n)
	}
	h.mustApply(fsm.RemoveClusterType, &hubpb.CmdRemoveCluster{Name: "east"})
	if h.read().GatewayPolicies("east") != nil {
		t.Error("a removed cluster's gateway policies were kept")
	}
	if h.read().GatewayPolicies("west") == nil {
		t.Error("removing east dropped west's gateway policies")
	}
}
