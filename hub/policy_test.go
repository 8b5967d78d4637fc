package hub

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation/policy"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/requestid"
)

// valueAnnotation carries a test's value in a policy, so that writes of
// one policy can be told apart.
const valueAnnotation = "test.meshfed.io/value"

// testPolicy is a valid policy named name for service default/<name>
// (host "<name>.default"), carrying value. It panics on an invalid name:
// a bug in the test, and it may be called from any goroutine.
func testPolicy(name, value string) *fedv1.TrafficPolicy {
	p := &policy.GlobalTrafficPolicy{
		APIVersion: policy.APIVersion, Kind: policy.Kind,
		Metadata: policy.Metadata{Name: name, Annotations: map[string]string{valueAnnotation: value}},
		Spec:     policy.Spec{Host: name + ".default"},
	}
	m, err := policy.ToProto(p)
	if err != nil {
		panic(fmt.Sprintf("testPolicy(%q, %q): %v", name, value, err))
	}
	return m
}

// policyValue is the value testPolicy put in m.
func policyValue(m *fedv1.TrafficPolicy) (string, error) {
	p, err := policy.FromProto(m)
	if err != nil {
		return "", err
	}
	return p.Metadata.Annotations[valueAnnotation], nil
}

// reviewsDoc is the example document of issue 12, as JSON.
const reviewsDoc = `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"reviews"},
 "spec":{"host":"reviews.default","http":[{"route":[{"destination":{"cluster":"east"},"weight":90},{"destination":{"cluster":"west"},"weight":10}]}]}}`

// docProto is doc as a client sends it (name and service from the
// document, spec as written, not canonical).
func docProto(t testing.TB, doc string) *fedv1.TrafficPolicy {
	t.Helper()
	p, err := policy.Decode([]byte(doc))
	if err != nil {
		t.Fatalf("test document: %v", err)
	}
	return &fedv1.TrafficPolicy{Name: p.Metadata.Name, Service: p.Service().String(), Spec: []byte(doc)}
}

// canonical is doc as the hub stores it.
func canonical(t testing.TB, doc string) []byte {
	t.Helper()
	p, err := policy.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	b, err := policy.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func actionsOf(resp *fedv1.ApplyPoliciesResponse) string {
	var out []string
	for _, r := range resp.GetResults() {
		out = append(out, r.GetName()+"="+strings.TrimPrefix(r.GetAction().String(), "POLICY_ACTION_"))
	}
	return strings.Join(out, " ")
}

// A follower serves ApplyPolicies: a dry run says what would be done and
// which clusters it touches, writing nothing; the apply stores the
// canonical document and reaches agents on Sync; the same batch again is
// unchanged and moves no revision; a second policy for the host, or a
// batch with one bad document, writes nothing and says why; a named
// request retried gets the first answer.
func TestApplyPoliciesThroughAFollower(t *testing.T) {
	h := newTestHub(t, 3)
	leader := h.Leader(30 * time.Second)
	follower := (leader + 1) % 3
	admin := h.Admin(follower)
	ctx := ctxT(t, 60*time.Second)

	east := joinCluster(t, h.Admin(), "east")
	joinCluster(t, h.Admin(), "west")
	joinCluster(t, h.Admin(), "north")
	se, err := east.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := se.publish(1, []*fedv1.ExportedService{svc("default", "reviews", 2)}); err != nil || res.GetErrorCode() != "" {
		t.Fatalf("publish: %v %v", res, err)
	}
	list := func() *fedv1.ListPoliciesResponse {
		t.Helper()
		l, err := admin.ListPolicies(ctx, &fedv1.ListPoliciesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	// Dry run: created, touching east (exports) and every member (imports).
	before := list()
	dry, err := admin.ApplyPolicies(ctx, &fedv1.ApplyPoliciesRequest{Policies: []*fedv1.TrafficPolicy{docProto(t, reviewsDoc)}, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	r := dry.GetResults()[0]
	if actionsOf(dry) != "reviews=CREATED" || r.GetService() != "default/reviews" ||
		!slices.Equal(r.GetExportingClusters(), []string{"east"}) || !slices.Equal(r.GetImportingClusters(), []string{"east", "north", "west"}) {
		t.Fatalf("dry run: %v", dry)
	}
	if after := list(); len(after.GetPolicies()) != 0 || after.GetRevision() != before.GetRevision() {
		t.Fatalf("a dry run wrote: %d policies, revision %d → %d", len(after.GetPolicies()), before.GetRevision(), after.GetRevision())
	}

	// Apply: stored canonical, sent to agents.
	applied, err := admin.ApplyPolicies(ctx, &fedv1.ApplyPoliciesRequest{Policies: []*fedv1.TrafficPolicy{docProto(t, reviewsDoc)}})
	if err != nil || actionsOf(applied) != "reviews=CREATED" {
		t.Fatalf("apply: %v, %v", applied, err)
	}
	got := list().GetPolicies()
	if len(got) != 1 || !bytes.Equal(got[0].GetSpec(), canonical(t, reviewsDoc)) || got[0].GetModifyRevision() != applied.GetRevision() {
		t.Fatalf("stored %v, want the canonical document at revision %d", got, applied.GetRevision())
	}
	m, err := se.next(func(m *fedv1.SyncResponse) bool { return len(m.GetDelta().GetPolicies()) > 0 })
	if err != nil {
		t.Fatal(err)
	}
	if sent := m.GetDelta().GetPolicies()[0]; !proto.Equal(sent, got[0]) {
		t.Errorf("agent was sent %v, want %v", sent, got[0])
	}

	// The same document again: unchanged, nothing written.
	rev := list().GetRevision()
	again, err := admin.ApplyPolicies(ctx, &fedv1.ApplyPoliciesRequest{Policies: []*fedv1.TrafficPolicy{docProto(t, reviewsDoc)}})
	if err != nil || actionsOf(again) != "reviews=UNCHANGED" {
		t.Fatalf("apply again: %v, %v", again, err)
	}
	if l := list(); l.GetRevision() != rev || l.GetPolicies()[0].GetModifyRevision() != applied.GetRevision() {
		t.Errorf("an unchanged apply moved the revision %d → %d (policy at %d)", rev, l.GetRevision(), l.GetPolicies()[0].GetModifyRevision())
	}

	// A changed document: the dry run shows the stored one to diff.
	changed := strings.Replace(strings.Replace(reviewsDoc, "90", "80", 1), "10}", "20}", 1)
	dry, err = admin.ApplyPolicies(ctx, &fedv1.ApplyPoliciesRequest{Policies: []*fedv1.TrafficPolicy{docProto(t, changed)}, DryRun: true})
	if err != nil || actionsOf(dry) != "reviews=CONFIGURED" || !bytes.Equal(dry.GetResults()[0].GetStoredSpec(), got[0].GetSpec()) {
		t.Fatalf("dry run of a change: %v, %v", dry, err)
	}

	// A second policy for the host: refused, naming the first.
	second := strings.Replace(reviewsDoc, `"name":"reviews"`, `"name":"reviews-canary"`, 1)
	_, err = admin.ApplyPolicies(ctx, &fedv1.ApplyPoliciesRequest{Policies: []*fedv1.TrafficPolicy{docProto(t, second)}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), `already has policy "reviews"`) {
		t.Fatalf("second policy for reviews.default: %v, want FailedPrecondition naming reviews", err)
	}
	_, err = admin.ApplyPolicies(ctx, &fedv1.ApplyPoliciesRequest{Policies: []*fedv1.TrafficPolicy{docProto(t, second)}, DryRun: true})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("dry run of a second policy for reviews.default: %v, want FailedPrecondition", err)
	}

	// One bad document: nothing of the batch is written.
	bad := docProto(t, strings.Replace(strings.Replace(reviewsDoc, `"name":"reviews"`, `"name":"ratings"`, 1), "reviews.default", "ratings.default", 1))
	bad.Spec = []byte(strings.Replace(string(bad.Spec), "90", "120", 1))
	_, err = admin.ApplyPolicies(ctx, &fedv1.ApplyPoliciesRequest{Policies: []*fedv1.TrafficPolicy{testPolicy("pay", "v"), bad}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "policies[1]: spec.http[0].route[0].weight: ") {
		t.Fatalf("batch with a bad document: %v, want InvalidArgument naming policies[1] and the field", err)
	}
	if n := len(list().GetPolicies()); n != 1 {
		t.Fatalf("%d policies after a refused batch, want 1", n)
	}

	// A named request, retried, gets the first answer (created), not
	// what a new request would get (unchanged).
	named := metadata.AppendToOutgoingContext(ctx, requestid.MetadataKey, "apply-pay-and-cart-1")
	batch := &fedv1.ApplyPoliciesRequest{Policies: []*fedv1.TrafficPolicy{testPolicy("pay", "v"), testPolicy("cart", "v")}}
	first, err := admin.ApplyPolicies(named, batch)
	if err != nil || actionsOf(first) != "pay=CREATED cart=CREATED" {
		t.Fatalf("named apply: %v, %v", first, err)
	}
	retry, err := h.Admin(leader).ApplyPolicies(named, batch)
	if err != nil || actionsOf(retry) != actionsOf(first) || retry.GetRevision() != first.GetRevision() {
		t.Fatalf("retried named apply: %v, %v; want the first answer %v", retry, err, first)
	}

	// PutPolicy is a batch of one; DeletePolicy by name.
	if _, err := admin.PutPolicy(ctx, &fedv1.PutPolicyRequest{Policy: testPolicy("pay", "w")}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.PutPolicy(ctx, &fedv1.PutPolicyRequest{Policy: docProto(t, second)}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("PutPolicy of a second policy for reviews.default: %v, want FailedPrecondition", err)
	}
	if _, err := admin.DeletePolicy(ctx, &fedv1.DeletePolicyRequest{Name: "cart"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.DeletePolicy(ctx, &fedv1.DeletePolicyRequest{Name: "cart"}); status.Code(err) != codes.NotFound {
		t.Errorf("delete of an absent policy: %v, want NotFound", err)
	}
}

// ApplyPolicies (protocol version 5) is refused, naming the server to
// upgrade, while one server applies version 4; its dry run too. Once that
// server is upgraded, it applies.
func TestApplyPoliciesWaitsForEveryServerToApplyIt(t *testing.T) {
	h := buildTestHub(t, 3, func(i int, c *Config) {
		if i == 2 {
			c.protocol = protocolOverride{advertise: 4}
		}
	})
	for i := range h.cfgs {
		h.Start(i)
	}
	h.WaitReady(30 * time.Second)
	ctx := ctxT(t, 60*time.Second)
	req := &fedv1.ApplyPoliciesRequest{Policies: []*fedv1.TrafficPolicy{testPolicy("p", "v")}}
	for _, dry := range []bool{false, true} {
		req.DryRun = dry
		_, err := h.Admin().ApplyPolicies(ctx, req)
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "server s2 applies version 4") {
			t.Fatalf("ApplyPolicies (dry run %v) with s2 at protocol 4: %v; want FailedPrecondition naming s2", dry, err)
		}
	}
	h.Kill(2)
	h.cfgs[2].protocol = protocolOverride{}
	h.Start(2)
	h.WaitReady(30 * time.Second)
	req.DryRun = false
	waitFor(t, 30*time.Second, "ApplyPolicies once s2 applies version 5", func() error {
		_, err := h.Admin().ApplyPolicies(ctx, req)
		return err
	})
}
