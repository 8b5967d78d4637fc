package agent

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation/policy"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
)

func replicas(g *fedv1.GatewayPolicies) string {
	var out []string
	for _, r := range g.GetReplicas() {
		s := r.GetInstance() + ":"
		for _, p := range r.GetPolicies() {
			s += " " + p.GetName()
		}
		out = append(out, s)
	}
	return strings.Join(out, "; ")
}

// The forwarder sends the first statuses and every change at once, an
// unchanged set only GatewayPolicyRefresh after its last send.
func TestPolicyForwarderSendsChangesAndRestatesUnchangedOnlyAtTheRefresh(t *testing.T) {
	var f policyForwarder
	t0 := time.Unix(1000, 0)
	a := &fedv1.GatewayPolicies{Replicas: []*fedv1.GatewayReplicaPolicies{{Instance: "gw-0", Policies: []*fedv1.GatewayPolicyStatus{{Name: "reviews", Revision: 4}}}}}
	if f.next(a, t0) == nil {
		t.Fatal("the first statuses were not sent")
	}
	same := proto.Clone(a).(*fedv1.GatewayPolicies)
	for _, d := range []time.Duration{0, time.Second, GatewayPolicyRefresh - time.Millisecond} {
		if f.next(same, t0.Add(d)) != nil {
			t.Errorf("unchanged statuses re-sent %v after the last send", d)
		}
	}
	if got := f.refreshIn(t0.Add(time.Minute)); got != GatewayPolicyRefresh-time.Minute {
		t.Errorf("refresh due in %v a minute after the send, want %v", got, GatewayPolicyRefresh-time.Minute)
	}
	if f.next(same, t0.Add(GatewayPolicyRefresh)) == nil {
		t.Error("unchanged statuses not restated at the refresh")
	}
	t1 := t0.Add(GatewayPolicyRefresh)
	changed := proto.Clone(a).(*fedv1.GatewayPolicies)
	changed.Replicas[0].Policies[0].RejectedRevision = 9
	if f.next(changed, t1.Add(time.Millisecond)) == nil {
		t.Error("a change was not sent at once")
	}
	if f.next(changed, t1.Add(2*time.Millisecond)) != nil {
		t.Error("the change was sent twice")
	}
}

// The report to the hub has each instance that reported once (its latest
// report), statuses by name; a stream gone takes its replica with it and
// signals a change; replicas past the size bound are left out.
func TestGatewayHubPolicyReport(t *testing.T) {
	h := newGatewayHub()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	id0, _ := h.addStream(&gatewayStreamState{Instance: "gw-b"})
	id1, _ := h.addStream(&gatewayStreamState{Instance: "gw-a"})
	id2, _ := h.addStream(&gatewayStreamState{Instance: "gw-a"})
	if _, err := h.addStream(&gatewayStreamState{Instance: "gw-c"}); err != nil { // never reports
		t.Fatal(err)
	}
	for _, id := range []uint64{id0, id1, id2} {
		h.setRevision(id, 1, 2)
	}
	now := time.Unix(100, 0)
	h.report(&gatewayv1.ReportRequest{Instance: "gw-b", Revision: 1, Policies: []*fedv1.GatewayPolicyStatus{{Name: "z"}, {Name: "a"}}}, now)
	h.report(&gatewayv1.ReportRequest{Instance: "gw-a", Revision: 1}, now)
	select {
	case <-h.policies:
	default:
		t.Fatal("a report did not signal a change")
	}
	if got, want := replicas(h.policyReport(log)), "gw-a:; gw-b: a z"; got != want {
		t.Errorf("report %q, want %q", got, want)
	}
	h.removeStream(id0)
	select {
	case <-h.policies:
	default:
		t.Error("a stream gone did not signal a change")
	}
	if got, want := replicas(h.policyReport(log)), "gw-a:"; got != want {
		t.Errorf("report after gw-b left %q, want %q", got, want)
	}
	if n := h.policyBound("gw-a"); n != 2 {
		t.Errorf("policy bound of gw-a %d, want 2", n)
	}

	// Past policy.MaxGatewayStatusBytes, the last replicas are left out.
	big := newGatewayHub()
	long := strings.Repeat("e", policy.MaxStatusErrorBytes)
	var ss []*fedv1.GatewayPolicyStatus
	for i := range 3000 {
		ss = append(ss, &fedv1.GatewayPolicyStatus{Name: "p" + strings.Repeat("x", i%40) + string(rune('a'+i%26)) + strings.Repeat("0", i/1000), Error: long})
	}
	for _, inst := range []string{"gw-0", "gw-1", "gw-2"} {
		id, _ := big.addStream(&gatewayStreamState{Instance: inst})
		big.setRevision(id, 1, len(ss))
		big.report(&gatewayv1.ReportRequest{Instance: inst, Revision: 1, Policies: ss}, now)
	}
	r := big.policyReport(log)
	if n := proto.Size(r); n > policy.MaxGatewayStatusBytes || len(r.GetReplicas()) == 0 || len(r.GetReplicas()) == 3 {
		t.Errorf("a report of %d replicas, %d bytes; want some left out, at most %d bytes", len(r.GetReplicas()), n, policy.MaxGatewayStatusBytes)
	}
}
