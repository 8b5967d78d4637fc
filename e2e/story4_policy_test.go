package e2e

import (
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation/policy"
	"github.com/meshfed/meshfed/testenv"
)

// TestGlobalTrafficPolicySplits90To10 is story 4: `meshfed policy apply`
// with the 90/10 document; once every gateway enforces its revision,
// central's calls to reviews split 90/10 between east and west, measured
// over 2000 requests. The policy is deleted at the end.
func TestGlobalTrafficPolicySplits90To10(t *testing.T) {
	fed := traffic.get(t)
	baseline(t, fed, "east", "west")
	t.Cleanup(func() { deletePolicy(t, fed, "reviews") })

	start := time.Now()
	r, err := applyPolicy(fed, "", t.TempDir(), policy.ExampleReviews, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.exit != 0 {
		t.Fatalf("policy apply: exit %d: %s", r.exit, r.stderr)
	}
	rev, err := appliedRevision(r.stdout)
	if err != nil {
		t.Fatal(err)
	}
	waitPolicy(t, fed, "reviews", rev, 60*time.Second)
	t.Logf("policy apply → revision %d enforced by every gateway in %v", rev, time.Since(start).Round(time.Millisecond))

	const n = 2000
	res := fed.Cluster("central").Drive("default/reviews", testenv.Requests(n), testenv.Concurrency(4))
	by := res.ByCluster()
	// West's share is Binomial(2000, 0.1): 200, standard deviation 13.4;
	// 5 of them either side.
	if len(res.Failed()) > 0 || by["west"] < 133 || by["west"] > 267 || by["east"]+by["west"] != n {
		t.Fatalf("over %d requests: %v; want west 200 ± 67, the rest east, none failed", n, res)
	}
	t.Logf("90/10 over %d requests: east %d (%.1f%%), west %d (%.1f%%)", n, by["east"], 100*float64(by["east"])/n, by["west"], 100*float64(by["west"])/n)
}
