package fsm

import (
	"bytes"
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/state"
)

// Limits of one ApplyPolicies command. The hub's handler checks them
// first, with field paths; the FSM enforces them again as the backstop.
const (
	// MaxPoliciesPerApply bounds the policies of one batch.
	MaxPoliciesPerApply = 100
	// MaxApplyPolicyBytes bounds the documents (spec) of one batch
	// together.
	MaxApplyPolicyBytes = 1 << 20
)

// PlanPolicies returns what an ApplyPolicies command of ps would do to each
// policy against the state r, in the order of ps, or the command's refusal.
// The FSM applies exactly this plan (applyPolicies); the hub answers a dry
// run with it. It checks only what the store relies on (the batch's
// bounds, names, services, one policy per host): the documents themselves
// are validated by the hub's handler (package federation/policy) before a
// command is proposed, since a validation rule that changed between
// builds would make Apply diverge.
//
// One policy per host: a policy is refused if, once the batch is applied,
// another policy would have its service; the error names that policy. A
// stored policy that the batch moves to another service does not count.
// Older logs (PutPolicy, type 7) may have stored two policies of one
// service: a batch that touches neither is not refused for them.
func PlanPolicies(r *state.ReadTxn, ps []*fedv1.TrafficPolicy) ([]fedv1.PolicyAction, *Error) {
	if n := len(ps); n == 0 || n > MaxPoliciesPerApply {
		return nil, refuse(codes.InvalidArgument, "policies: %d, want 1 to %d", n, MaxPoliciesPerApply)
	}
	total := 0
	byName := make(map[string]int, len(ps))
	byService := make(map[string]int, len(ps))
	for i, p := range ps {
		field := fmt.Sprintf("policies[%d]", i)
		if _, err := federation.ParseClusterName(p.GetName()); err != nil {
			return nil, refuse(codes.InvalidArgument, "%s.name: %q must be a lowercase DNS label of at most %d characters", field, p.GetName(), federation.MaxNameLength)
		}
		if _, err := federation.ParseServiceKey(p.GetService()); err != nil {
			return nil, refuse(codes.InvalidArgument, "%s.service: %v", field, err)
		}
		if len(p.GetSpec()) == 0 {
			return nil, refuse(codes.InvalidArgument, "%s.spec: required", field)
		}
		total += len(p.GetSpec())
		if j, dup := byName[p.GetName()]; dup {
			return nil, refuse(codes.InvalidArgument, "%s.name: %q is also policies[%d]; a name once a batch", field, p.GetName(), j)
		}
		byName[p.GetName()] = i
		if j, dup := byService[p.GetService()]; dup {
			return nil, refuse(codes.FailedPrecondition, "%s (%q): service %s is also that of policies[%d] (%q); one policy per host", field, p.GetName(), p.GetService(), j, ps[j].GetName())
		}
		byService[p.GetService()] = i
	}
	if total > MaxApplyPolicyBytes {
		return nil, refuse(codes.InvalidArgument, "policies: %d bytes of documents, at most %d", total, MaxApplyPolicyBytes)
	}
	actions := make([]fedv1.PolicyAction, len(ps))
	created := 0
	for i, p := range ps {
		for _, q := range r.PoliciesFor(p.GetService()) {
			if _, moved := byName[q.GetName()]; !moved {
				return nil, refuse(codes.FailedPrecondition, "policies[%d] (%q): service %s already has policy %q; one policy per host: change or delete %q first", i, p.GetName(), p.GetService(), q.GetName(), q.GetName())
			}
		}
		switch old := r.Policy(p.GetName()); {
		case old == nil:
			actions[i] = fedv1.PolicyAction_POLICY_ACTION_CREATED
			created++
		case old.GetService() == p.GetService() && bytes.Equal(old.GetSpec(), p.GetSpec()):
			actions[i] = fedv1.PolicyAction_POLICY_ACTION_UNCHANGED
		default:
			actions[i] = fedv1.PolicyAction_POLICY_ACTION_CONFIGURED
		}
	}
	if created > 0 && len(r.Policies())+created > MaxPolicies {
		return nil, refuse(codes.ResourceExhausted, "policies: %d stored and %d new, at most %d", len(r.Policies()), created, MaxPolicies)
	}
	return actions, nil
}

// applyPolicies applies the plan of ps: created and configured policies
// are stored (name, service and spec; the store sets the revisions),
// unchanged ones are not written, so a batch of unchanged policies moves
// no revision and wakes no stream.
func applyPolicies(w *state.WriteTxn, ps []*fedv1.TrafficPolicy) ([]fedv1.PolicyAction, *Error) {
	actions, err := PlanPolicies(&w.ReadTxn, ps)
	if err != nil {
		return nil, err
	}
	for i, p := range ps {
		if actions[i] == fedv1.PolicyAction_POLICY_ACTION_UNCHANGED {
			continue
		}
		w.PutPolicy(&fedv1.TrafficPolicy{Name: p.GetName(), Service: p.GetService(), Spec: p.GetSpec()})
	}
	return actions, nil
}
