package fsm_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
)

const (
	created    = fedv1.PolicyAction_POLICY_ACTION_CREATED
	configured = fedv1.PolicyAction_POLICY_ACTION_CONFIGURED
	unchanged  = fedv1.PolicyAction_POLICY_ACTION_UNCHANGED
)

// pol is a policy as ApplyPolicies carries it; the FSM treats the document
// as opaque bytes.
func pol(name, service, doc string) *fedv1.TrafficPolicy {
	return &fedv1.TrafficPolicy{Name: name, Service: service, Spec: []byte(doc)}
}

func batch(ps ...*fedv1.TrafficPolicy) *hubpb.CmdApplyPolicies {
	return &hubpb.CmdApplyPolicies{Policies: ps}
}

// applyPolicies applies a batch and returns its result.
func (h *testFSM) applyPolicies(ps ...*fedv1.TrafficPolicy) *fsm.Result {
	h.t.Helper()
	return h.applyRaw(encode(h.t, fsm.ApplyPoliciesType, batch(ps...)))
}

// policyNames lists the stored policies as name=service:doc@create/modify.
func (h *testFSM) policyNames() string {
	var out []string
	for _, p := range h.read().Policies() {
		out = append(out, fmt.Sprintf("%s=%s:%s@%d/%d", p.GetName(), p.GetService(), p.GetSpec(), p.GetCreateRevision(), p.GetModifyRevision()))
	}
	return strings.Join(out, " ")
}

func TestApplyPoliciesCreatesConfiguresAndLeavesUnchangedPoliciesAlone(t *testing.T) {
	h := newTestFSM(t)
	res := h.applyPolicies(pol("reviews", "default/reviews", "a"), pol("cart", "shop/cart", "c"))
	if res.Err != nil || !slices.Equal(res.PolicyActions, []fedv1.PolicyAction{created, created}) {
		t.Fatalf("first apply: %s, want both created", resultKey(res))
	}
	first := h.idx
	if got, want := h.policyNames(), fmt.Sprintf("cart=shop/cart:c@%d/%d reviews=default/reviews:a@%d/%d", first, first, first, first); got != want {
		t.Fatalf("stored %q, want %q", got, want)
	}

	// The same batch again: nothing is written, no revision moves, no
	// stream wakes.
	rev := h.read().Revision()
	watch := h.Store().Watch()
	res = h.applyPolicies(pol("reviews", "default/reviews", "a"), pol("cart", "shop/cart", "c"))
	if res.Err != nil || !slices.Equal(res.PolicyActions, []fedv1.PolicyAction{unchanged, unchanged}) {
		t.Fatalf("same batch: %s, want both unchanged", resultKey(res))
	}
	if h.read().Revision() != rev || closed(watch) {
		t.Errorf("an unchanged batch moved the revision (%d → %d) or woke watchers", rev, h.read().Revision())
	}

	// One document changes: only it is written; its create revision stays.
	res = h.applyPolicies(pol("reviews", "default/reviews", "b"), pol("cart", "shop/cart", "c"))
	if res.Err != nil || !slices.Equal(res.PolicyActions, []fedv1.PolicyAction{configured, unchanged}) {
		t.Fatalf("one changed: %s, want configured, unchanged", resultKey(res))
	}
	if got, want := h.policyNames(), fmt.Sprintf("cart=shop/cart:c@%d/%d reviews=default/reviews:b@%d/%d", first, first, first, h.idx); got != want {
		t.Fatalf("stored %q, want %q", got, want)
	}
	if d := h.read().Changes(rev); len(d.Policies) != 1 || d.Policies[0].GetName() != "reviews" {
		t.Errorf("delta after the change carries %d policies, want reviews alone", len(d.Policies))
	}

	// Revisions sent in the command are not the store's.
	p := pol("pay", "shop/pay", "p")
	p.CreateRevision, p.ModifyRevision = 1, 1
	h.applyPolicies(p)
	if got := h.read().Policy("pay"); got.GetCreateRevision() != h.idx || got.GetModifyRevision() != h.idx {
		t.Errorf("pay stored at %d/%d, want %d/%d", got.GetCreateRevision(), got.GetModifyRevision(), h.idx, h.idx)
	}
}

func TestApplyPoliciesRefusesASecondPolicyForAHostNamingTheFirst(t *testing.T) {
	h := newTestFSM(t)
	h.applyPolicies(pol("reviews", "default/reviews", "a"))
	before := h.policyNames()

	res := h.applyPolicies(pol("reviews-canary", "default/reviews", "b"))
	wantCode(t, "second policy for default/reviews", res.Err, codes.FailedPrecondition)
	if !strings.Contains(res.Err.Msg, `policy "reviews"`) || !strings.Contains(res.Err.Msg, "reviews-canary") {
		t.Errorf("refusal %q does not name both policies", res.Err.Msg)
	}
	if h.policyNames() != before {
		t.Errorf("a refused apply changed the store: %q", h.policyNames())
	}

	// Two policies for one host in one batch.
	res = h.applyPolicies(pol("x", "shop/x", "1"), pol("y", "shop/x", "2"))
	wantCode(t, "two policies for shop/x in one batch", res.Err, codes.FailedPrecondition)
	if !strings.Contains(res.Err.Msg, `"x"`) || !strings.Contains(res.Err.Msg, "policies[0]") {
		t.Errorf("refusal %q does not name the other policy of the batch", res.Err.Msg)
	}

	// A batch that moves the first policy away frees its host for another.
	res = h.applyPolicies(pol("reviews-canary", "default/reviews", "b"), pol("reviews", "default/ratings", "a2"))
	if res.Err != nil || !slices.Equal(res.PolicyActions, []fedv1.PolicyAction{created, configured}) {
		t.Fatalf("swap: %s, want created, configured", resultKey(res))
	}

	// Policies the old PutPolicy stored for one service do not stop a
	// batch that does not touch them, and stop one that does.
	h.mustApply(fsm.PutPolicyType, &hubpb.CmdPutPolicy{Policy: pol("old1", "legacy/svc", "1")})
	h.mustApply(fsm.PutPolicyType, &hubpb.CmdPutPolicy{Policy: pol("old2", "legacy/svc", "2")})
	if res := h.applyPolicies(pol("other", "shop/other", "o")); res.Err != nil {
		t.Errorf("batch beside legacy duplicates: %s", resultKey(res))
	}
	res = h.applyPolicies(pol("old1", "legacy/svc", "1b"))
	wantCode(t, "update of one of two legacy policies for a service", res.Err, codes.FailedPrecondition)
	if !strings.Contains(res.Err.Msg, `policy "old2"`) {
		t.Errorf("refusal %q does not name old2", res.Err.Msg)
	}
}

func TestApplyPoliciesIsAllOrNothing(t *testing.T) {
	h := newTestFSM(t)
	h.applyPolicies(pol("reviews", "default/reviews", "a"))
	before, rev := h.policyNames(), h.read().Revision()
	for _, tc := range []struct {
		name  string
		batch []*fedv1.TrafficPolicy
		code  codes.Code
		field string
	}{
		{"host conflict last", []*fedv1.TrafficPolicy{pol("cart", "shop/cart", "c"), pol("reviews", "default/reviews", "b"), pol("dup", "default/reviews", "d")}, codes.FailedPrecondition, "policies[2]"},
		{"name twice", []*fedv1.TrafficPolicy{pol("cart", "shop/cart", "c"), pol("cart", "shop/pay", "p")}, codes.InvalidArgument, "policies[1].name"},
		{"bad name", []*fedv1.TrafficPolicy{pol("cart", "shop/cart", "c"), pol("Bad_Name", "shop/pay", "p")}, codes.InvalidArgument, "policies[1].name"},
		{"bad service", []*fedv1.TrafficPolicy{pol("cart", "shop/cart", "c"), pol("pay", "nope", "p")}, codes.InvalidArgument, "policies[1].service"},
		{"no document", []*fedv1.TrafficPolicy{pol("cart", "shop/cart", "c"), pol("pay", "shop/pay", "")}, codes.InvalidArgument, "policies[1].spec"},
		{"empty batch", nil, codes.InvalidArgument, "policies: 0, want 1 to 100"},
	} {
		res := h.applyPolicies(tc.batch...)
		wantCode(t, tc.name, res.Err, tc.code)
		if !strings.Contains(res.Err.Msg, tc.field) {
			t.Errorf("%s: refusal %q does not name %s", tc.name, res.Err.Msg, tc.field)
		}
		if h.policyNames() != before || h.read().Revision() != rev {
			t.Fatalf("%s: a refused batch changed the store: %q (revision %d → %d)", tc.name, h.policyNames(), rev, h.read().Revision())
		}
	}
}

func TestApplyPoliciesBounds(t *testing.T) {
	h := newTestFSM(t)
	var many []*fedv1.TrafficPolicy
	for i := range fsm.MaxPoliciesPerApply + 1 {
		many = append(many, pol(fmt.Sprintf("p%d", i), fmt.Sprintf("shop/s%d", i), "x"))
	}
	res := h.applyPolicies(many...)
	wantCode(t, "101 policies", res.Err, codes.InvalidArgument)
	if !strings.Contains(res.Err.Msg, "101, want 1 to 100") {
		t.Errorf("refusal %q does not state the count and the bound", res.Err.Msg)
	}
	if res := h.applyPolicies(many[:fsm.MaxPoliciesPerApply]...); res.Err != nil {
		t.Errorf("100 policies: %s", resultKey(res))
	}

	big := strings.Repeat("x", fsm.MaxApplyPolicyBytes/2+1)
	res = h.applyPolicies(pol("a", "big/a", big), pol("b", "big/b", big))
	wantCode(t, "documents over 1 MiB together", res.Err, codes.InvalidArgument)
	if want := fmt.Sprintf("%d bytes of documents, at most %d", 2*len(big), fsm.MaxApplyPolicyBytes); !strings.Contains(res.Err.Msg, want) {
		t.Errorf("refusal %q, want it to say %q", res.Err.Msg, want)
	}
}

func TestApplyPoliciesAnswersARepeatedRequestWithTheFirstActions(t *testing.T) {
	h := newTestFSM(t)
	cmd := batch(pol("reviews", "default/reviews", "a"), pol("cart", "shop/cart", "c"))
	first := h.applyRequest("apply-policies-0001", 1000, fsm.ApplyPoliciesType, cmd)
	if first.Err != nil || !slices.Equal(first.PolicyActions, []fedv1.PolicyAction{created, created}) {
		t.Fatalf("first: %s", resultKey(first))
	}
	again := h.applyRequest("apply-policies-0001", 2000, fsm.ApplyPoliciesType, cmd)
	if !again.Duplicate || !slices.Equal(again.PolicyActions, first.PolicyActions) || again.Index != first.Index {
		t.Errorf("repeat: %s, want the first result (%s) as a duplicate", resultKey(again), resultKey(first))
	}
	// The same batch under a new ID is new, and unchanged.
	if r := h.applyRequest("apply-policies-0002", 3000, fsm.ApplyPoliciesType, cmd); !slices.Equal(r.PolicyActions, []fedv1.PolicyAction{unchanged, unchanged}) {
		t.Errorf("new request of the same batch: %s, want unchanged twice", resultKey(r))
	}
}

func TestAppliedPoliciesSurviveASnapshotWithTheirHostRule(t *testing.T) {
	h := newTestFSM(t)
	h.applyPolicies(pol("reviews", "default/reviews", "a"), pol("cart", "shop/cart", "c"))
	h.applyPolicies(pol("reviews", "default/reviews", "b"))
	f := restored(t, persist(t, h.FSM))
	sameFSM(t, h.FSM, f)

	r := &testFSM{t: t, FSM: f, idx: h.idx}
	if got := r.policyNames(); got != h.policyNames() {
		t.Fatalf("restored %q, want %q", got, h.policyNames())
	}
	// The restored store still knows which policy holds each host.
	res := r.applyPolicies(pol("reviews-canary", "default/reviews", "x"))
	wantCode(t, "second policy after restore", res.Err, codes.FailedPrecondition)
	if !strings.Contains(res.Err.Msg, `policy "reviews"`) {
		t.Errorf("refusal %q does not name reviews", res.Err.Msg)
	}
	if res := r.applyPolicies(pol("reviews", "default/reviews", "b")); !slices.Equal(res.PolicyActions, []fedv1.PolicyAction{unchanged}) {
		t.Errorf("same document after restore: %s, want unchanged", resultKey(res))
	}
}
