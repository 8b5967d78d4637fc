package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/agent"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/testenv"
)

// TestJoinFederatesTheClusterAndRefusesAReplayedToken is story 1, as an
// operator does it: for east and west, `meshfed token create`, then
// `meshfed join TOKEN` run against the cluster's API server (the agent
// keeps its credentials in the cluster's Secrets and runs on). Each
// cluster appears in `meshfed clusters list`, connected, with the locality
// and trust domain it joined with, and its trust bundle is federated: the
// other member has applied it (`meshfed trust status`). East's token,
// replayed by another `meshfed join`, is refused: the command fails,
// stores nothing, and east's membership is unchanged.
func TestJoinFederatesTheClusterAndRefusesAReplayedToken(t *testing.T) {
	closeShared(nil) // one federation at a time (main_test.go)
	fed := testenv.Start(t, testenv.Options{HubServers: 1, NoAgents: true,
		Clusters: []testenv.Cluster{eastCluster, westCluster}})
	ctx := context.Background()
	tokens := map[string]string{}
	for _, c := range fed.Clusters() {
		if err := c.InstallCRDs(ctx); err != nil {
			t.Fatal(err)
		}
		var tok fedv1.CreateTokenResponse
		cliJSON(t, fed, &tok, "token", "create", "--cluster", c.Name(), "-o", "json")
		tokens[c.Name()] = tok.GetToken()
		spec := c.Spec()
		p := fed.MeshfedProcess(c.Name()+"/join", "join", tok.GetToken(),
			"--cluster", c.Name(), "--region", spec.Region, "--zone", spec.Zone,
			"--source", "kubernetes", "--kubeconfig", c.Kubeconfig(), "--data-dir", t.TempDir(),
			"--http-port", "-1", "--gateway-api", "", "--gateway-address", c.GatewayIP())
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = p.Kill()
			if t.Failed() {
				t.Logf("--- %s ---\n%s", p.Name(), p.Tail(3000))
			}
		})
	}

	var before *fedv1.ClusterRecord
	if err := testenv.WaitFor(ctx, 60*time.Second, func(context.Context) error {
		var list fedv1.ListClustersResponse
		if err := cliJSONErr(fed, &list, "clusters", "list", "-o", "json"); err != nil {
			return err
		}
		if n := len(list.GetClusters()); n != 2 {
			return fmt.Errorf("clusters list: %d clusters, want 2", n)
		}
		for _, c := range list.GetClusters() {
			spec := fed.Cluster(c.GetName()).Spec()
			if c.GetStatus() != "connected" || c.GetTrustDomain() != c.GetName()+".meshfed.local" ||
				c.GetLocality().GetRegion() != spec.Region || c.GetLocality().GetZone() != spec.Zone {
				return fmt.Errorf("clusters list: %s is %s, trust domain %s, locality %v; want connected, %s.meshfed.local, %s/%s",
					c.GetName(), c.GetStatus(), c.GetTrustDomain(), c.GetLocality(), c.GetName(), spec.Region, spec.Zone)
			}
			if c.GetName() == "east" {
				before = c
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Federated: each cluster's bundle is applied by the other member.
	if err := testenv.WaitFor(ctx, 60*time.Second, func(context.Context) error {
		var st fedv1.TrustStatusResponse
		if err := cliJSONErr(fed, &st, "trust", "status", "-o", "json"); err != nil {
			return err
		}
		if n := len(st.GetClusters()); n != 2 {
			return fmt.Errorf("trust status: %d clusters' bundles, want 2", n)
		}
		for _, c := range st.GetClusters() {
			if c.GetSequenceNumber() == 0 || c.GetRoots() == 0 {
				return fmt.Errorf("trust status: the hub holds no bundle of %s", c.GetCluster())
			}
			if len(c.GetMembers()) != 1 || !c.GetMembers()[0].GetHolds() {
				return fmt.Errorf("trust status: %s's bundle (sequence %d): members %v, want the other cluster holding it", c.GetCluster(), c.GetSequenceNumber(), c.GetMembers())
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// The replay: east's token again, from a fresh data directory (the file
	// source keeps its credentials there).
	dir := t.TempDir()
	catalog := filepath.Join(dir, "catalog.yaml")
	if err := os.WriteFile(catalog, []byte("services: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	r, err := run(rctx, fed.Hub().Binary(), "join", tokens["east"], "--cluster", "east", "--region", eastCluster.Region, "--zone", eastCluster.Zone,
		"--source", "file:"+catalog, "--data-dir", data, "--http-port", "-1", "--gateway-api", "")
	if err != nil {
		t.Fatalf("the replayed join did not fail (it ran on as an agent?): %v", err)
	}
	line, _, _ := strings.Cut(r.stderr, "\n")
	if r.exit != 1 || !strings.HasPrefix(line, "error: "+agent.ErrJoinRefused.Error()) {
		t.Fatalf("replayed token: exit %d, %q; want exit 1 and the hub's refusal (%v)", r.exit, line, agent.ErrJoinRefused)
	}
	t.Logf("replayed token: %s", line)
	if _, err := os.Stat(filepath.Join(data, agent.CredentialsFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused join left credentials behind: %v", err)
	}
	var after fedv1.DescribeClusterResponse
	cliJSON(t, fed, &after, "clusters", "describe", "east", "-o", "json")
	if a := after.GetCluster(); a.GetJoinedAtMs() != before.GetJoinedAtMs() || a.GetAgentCertSerial() != before.GetAgentCertSerial() {
		t.Errorf("east after the replay: joined %d, certificate %s; want its first join's, %d and %s",
			a.GetJoinedAtMs(), a.GetAgentCertSerial(), before.GetJoinedAtMs(), before.GetAgentCertSerial())
	}
}

// cliJSON runs a meshfed command with -o json and decodes its output into
// m, failing the test if it fails.
func cliJSON(t testing.TB, fed *testenv.Federation, m proto.Message, args ...string) {
	t.Helper()
	if err := cliJSONErr(fed, m, args...); err != nil {
		t.Fatal(err)
	}
}

func cliJSONErr(fed *testenv.Federation, m proto.Message, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := meshfed(ctx, fed, args...)
	if err != nil {
		return err
	}
	if r.exit != 0 {
		return fmt.Errorf("meshfed %s: exit %d: %s", strings.Join(args, " "), r.exit, r.stderr)
	}
	if err := protojson.Unmarshal([]byte(r.stdout), m); err != nil {
		return fmt.Errorf("meshfed %s: %w: %s", strings.Join(args, " "), err, r.stdout)
	}
	return nil
}
