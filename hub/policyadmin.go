package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/policy"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/hub/state"
)

// MaxDiffSpecBytes bounds the stored documents a dry run of ApplyPolicies
// returns together (PolicyApplyResult.stored_spec); past it they are left
// out (stored_spec_omitted), so the response stays far below
// MaxMessageSize whatever is stored.
const MaxDiffSpecBytes = 2 << 20

// checkPolicies validates a batch of policies as ApplyPolicies receives
// them and returns them as the hub stores them: name, service and the
// canonical document (policy.ToProto of policy.FromProto), without the
// caller's revisions. Validation is package policy's alone (one rule in
// one place); errors are InvalidArgument naming policies[i] and the
// field path inside the document. The batch's own bounds are checked here
// before any document is decoded, and the rest of the batch rules (unique
// names, one policy per host) by fsm.PlanPolicies.
func checkPolicies(in []*fedv1.TrafficPolicy) ([]*fedv1.TrafficPolicy, error) {
	if n := len(in); n == 0 || n > fsm.MaxPoliciesPerApply {
		return nil, invalidArg("policies", "%d policies, want 1 to %d", n, fsm.MaxPoliciesPerApply)
	}
	out := make([]*fedv1.TrafficPolicy, len(in))
	total := 0
	for i, m := range in {
		field := fmt.Sprintf("policies[%d]", i)
		p, err := policy.FromProto(m)
		if err != nil {
			return nil, policyErr(field, err)
		}
		if out[i], err = policy.ToProto(p); err != nil {
			return nil, policyErr(field, err)
		}
		if total += len(out[i].GetSpec()); total > fsm.MaxApplyPolicyBytes {
			return nil, invalidArg("policies", "more than %d bytes of documents (canonical JSON) together", fsm.MaxApplyPolicyBytes)
		}
	}
	return out, nil
}

// policyErr is InvalidArgument for package policy's errors about the
// policy at field: "policies[1]: spec.http[0].route[1].weight: must be 0 to
// 100, got 120", several joined with "; ". FromProto's disagreements
// between the message and its document are paths of the message
// ("policies[1].name: ...").
func policyErr(field string, err error) error {
	var msgs []string
	for _, e := range flatten(err) {
		var fe *policy.FieldError
		switch {
		case errors.As(e, &fe) && (fe.Path == "name" || fe.Path == "service"):
			msgs = append(msgs, field+"."+fe.Error())
		default:
			msgs = append(msgs, field+": "+e.Error())
		}
	}
	return status.Error(codes.InvalidArgument, strings.Join(msgs, "; "))
}

// flatten returns the errors joined in err (errors.Join), or err alone.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// applyPolicies validates and applies a batch, or plans it for a dry run
// (nothing written: the answer is fsm.PlanPolicies over a consistent read,
// what the FSM would do at that revision).
func (s *Server) applyPolicies(ctx context.Context, in []*fedv1.TrafficPolicy, dryRun bool) (*fedv1.ApplyPoliciesResponse, error) {
	ps, err := checkPolicies(in)
	if err != nil {
		return nil, err
	}
	if dryRun {
		// Refused as the write would be while a server cannot apply it.
		if err := s.checkProtocol(fsm.ApplyPoliciesType); err != nil {
			return nil, err
		}
		r, err := s.consistentRead(ctx)
		if err != nil {
			return nil, err
		}
		actions, ferr := fsm.PlanPolicies(r, ps)
		if ferr != nil {
			return nil, status.Error(ferr.Code, ferr.Msg)
		}
		return planned(r, ps, actions), nil
	}
	res, err := s.propose(ctx, fsm.ApplyPoliciesType, &hubpb.CmdApplyPolicies{Policies: ps})
	if err != nil {
		return nil, err
	}
	if len(res.policyActions) != len(ps) {
		return nil, status.Errorf(codes.Internal, "hub: ApplyPolicies at index %d answered %d actions for %d policies", res.index, len(res.policyActions), len(ps))
	}
	resp := &fedv1.ApplyPoliciesResponse{Revision: res.index}
	for i, p := range ps {
		resp.Results = append(resp.Results, &fedv1.PolicyApplyResult{Name: p.GetName(), Service: p.GetService(), Action: res.policyActions[i]})
	}
	return resp, nil
}

// planned is a dry run's answer: each policy's action, the stored document
// of a configured one (within MaxDiffSpecBytes together), and the member
// clusters it touches with their gateway replicas (every cluster that
// exports the service imports it too).
func planned(r *state.ReadTxn, ps []*fedv1.TrafficPolicy, actions []fedv1.PolicyAction) *fedv1.ApplyPoliciesResponse {
	resp := &fedv1.ApplyPoliciesResponse{Revision: r.Revision()}
	budget := MaxDiffSpecBytes
	var members []string
	for _, c := range r.Clusters() {
		members = append(members, c.GetName())
	}
	slices.Sort(members)
	for i, p := range ps {
		res := &fedv1.PolicyApplyResult{Name: p.GetName(), Service: p.GetService(), Action: actions[i]}
		if actions[i] == fedv1.PolicyAction_POLICY_ACTION_CONFIGURED {
			if old := r.Policy(p.GetName()).GetSpec(); len(old) <= budget {
				res.StoredSpec, budget = old, budget-len(old)
			} else {
				res.StoredSpecOmitted = true
			}
		}
		// checkPolicies made the service from a validated document.
		key, _ := federation.ParseServiceKey(p.GetService())
		res.ExportingClusters, res.ImportingClusters = touched(r, key, members)
		res.Gateways = touchedGateways(r, res.ImportingClusters)
		resp.Results = append(resp.Results, res)
	}
	return resp
}

// touched returns the member clusters a policy of service key touches:
// those that export the service, and those that import it. Every member
// imports every exported service (the exporting ones too: see the agent's
// imports), so while any cluster exports it, every member imports it; while
// none does, none imports it.
func touched(r *state.ReadTxn, key federation.ServiceKey, members []string) (exporting, importing []string) {
	for _, e := range r.ExportsFor(key) {
		exporting = append(exporting, e.GetCluster())
	}
	slices.Sort(exporting)
	exporting = slices.Compact(exporting)
	if len(exporting) > 0 {
		importing = slices.Clone(members)
	}
	return exporting, importing
}

func (a *adminService) ApplyPolicies(ctx context.Context, req *fedv1.ApplyPoliciesRequest) (*fedv1.ApplyPoliciesResponse, error) {
	return a.s.applyPolicies(ctx, req.GetPolicies(), req.GetDryRun())
}
