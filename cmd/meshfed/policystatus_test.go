package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/grpc"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// statusAdmin answers PolicyStatus with resp.
type statusAdmin struct {
	fedv1.AdminClient
	resp *fedv1.PolicyStatusResponse
	got  *fedv1.PolicyStatusRequest
}

func (s *statusAdmin) PolicyStatus(_ context.Context, in *fedv1.PolicyStatusRequest, _ ...grpc.CallOption) (*fedv1.PolicyStatusResponse, error) {
	s.got = in
	return s.resp, nil
}

// The table has a row per policy, cluster and gateway replica: the
// revision in force, whether current, a rejection with its reason (on one
// line), the age of the report by the hub's clock; a cluster without a
// report says so. The exit status is 0 even with a rejection.
func TestPolicyStatusTable(t *testing.T) {
	now := int64(1_700_000_000_000)
	a := &statusAdmin{resp: &fedv1.PolicyStatusResponse{NowMs: now, Revision: 50, Policies: []*fedv1.PolicyState{{
		Name: "reviews", Service: "default/reviews", Revision: 42, Gateways: []*fedv1.PolicyGatewayStatus{
			{Cluster: "east", Gateway: "gw-0", Revision: 42, Current: true, ReportedMs: now - 45_000},
			{Cluster: "east", Gateway: "gw-1", Revision: 40, RejectedRevision: 42, Error: "spec.http[0]:\n unknown field", ReportedMs: now - 3*3600_000 - 5*60_000},
			{Cluster: "west"},
		},
	}}}}
	d := withAdmin(t, newTestDeps(t, nil), a, nil)
	r := run(t, d, "policy", "status", "reviews", "--config", "c")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	if a.got.GetName() != "reviews" {
		t.Errorf("asked for %q, want reviews", a.got.GetName())
	}
	want := []string{
		"POLICY    CLUSTER   GATEWAY       REVISION   CURRENT   REJECTED   ERROR                         AGE",
		"reviews   east      gw-0          42         yes       -          -                             45s",
		"reviews   east      gw-1          40         no        42         spec.http[0]: unknown field   3h5m",
		"reviews   west      (no report)   -          -         -          -                             -",
	}
	if got := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("table:\n%s\nwant:\n%s", r.stdout, strings.Join(want, "\n"))
	}

	r = run(t, d, "policy", "status", "--config", "c", "-o", "json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &struct{}{}) != nil || !strings.Contains(r.stdout, `"rejected_revision": "42"`) {
		t.Fatalf("json: exit %d\n%s", r.code, r.stdout)
	}
	if a.got.GetName() != "" {
		t.Errorf("status without a name asked for %q", a.got.GetName())
	}
}

func TestAge(t *testing.T) {
	for ms, want := range map[int64]string{-5: "0s", 999: "0s", 59_000: "59s", 61_000: "1m1s", 25 * 60_000: "25m", 2*3600_000 + 5*60_000: "2h5m", 76 * 3600_000: "3d4h"} {
		if got := age(ms); got != want {
			t.Errorf("age(%d) = %q, want %q", ms, got, want)
		}
	}
}
