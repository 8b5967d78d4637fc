package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation/policy"
)

// TestPolicyStatusShowsTheRevisionInForce applies the example
// policy with `meshfed policy apply`, and waits until `meshfed policy
// status` shows, for the cluster's real gateway process, that revision in
// force and current, with no rejection; the table says the same.
func TestPolicyStatusShowsTheRevisionInForce(t *testing.T) {
	fed := Start(t, Options{HubServers: 1, Clusters: []Cluster{{Name: "east", Region: "us-east", Zone: "us-east-1a"}}})
	ctx := context.Background()
	gw := fed.Cluster("east").Gateway()
	if gw == nil {
		t.Fatal("east has no gateway")
	}
	doc := filepath.Join(t.TempDir(), "reviews.yaml")
	if err := os.WriteFile(doc, []byte(policy.ExampleReviews), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := fed.Hub().Command(ctx, "policy", "apply", "-f", doc)
	if err != nil {
		t.Fatal(err)
	}
	// "policy/reviews created (revision N)"
	_, after, _ := strings.Cut(strings.TrimSpace(string(out)), "(revision ")
	rev, err := strconv.ParseUint(strings.TrimSuffix(after, ")"), 10, 64)
	if err != nil {
		t.Fatalf("policy apply printed %q: %v", out, err)
	}

	type row struct {
		Cluster          string `json:"cluster"`
		Gateway          string `json:"gateway"`
		Revision         string `json:"revision"` // protojson: uint64 as a string
		Current          bool   `json:"current"`
		RejectedRevision string `json:"rejected_revision"`
		Error            string `json:"error"`
	}
	var status struct {
		Policies []struct {
			Name     string `json:"name"`
			Gateways []row  `json:"gateways"`
		} `json:"policies"`
	}
	start := time.Now()
	if err := WaitFor(ctx, 60*time.Second, func(ctx context.Context) error {
		out, err := fed.Hub().Command(ctx, "policy", "status", "reviews", "-o", "json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal(out, &status); err != nil {
			return fmt.Errorf("policy status -o json: %w: %s", err, out)
		}
		if len(status.Policies) != 1 || len(status.Policies[0].Gateways) != 1 {
			return fmt.Errorf("policy status: %s", out)
		}
		g := status.Policies[0].Gateways[0]
		if g.Cluster != "east" || g.Gateway == "" || g.Revision != strconv.FormatUint(rev, 10) || !g.Current || g.RejectedRevision != "" || g.Error != "" {
			return fmt.Errorf("east's gateway: %+v, want revision %d in force and current", g, rev)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("apply to status showing the revision in force: %v", time.Since(start))

	out, err = fed.Hub().Command(ctx, "policy", "status")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{"reviews", "east", status.Policies[0].Gateways[0].Gateway, strconv.FormatUint(rev, 10), "yes", "-", "-"}
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "POLICY ") {
		t.Fatalf("policy status table:\n%s", out)
	}
	if f := strings.Fields(lines[1]); len(f) != 8 || strings.Join(f[:7], " ") != strings.Join(want, " ") {
		t.Errorf("policy status row %q, want %q and an age", lines[1], strings.Join(want, " "))
	}
}
