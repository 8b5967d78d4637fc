package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshfed/meshfed/agent"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the current output")

// checkGolden compares got with testdata/name.golden.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it)\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

// The instant every fixture is relative to: 2023-11-14T22:13:20Z.
const t0 = int64(1_700_000_000_000)

var (
	statusFixture = &fedv1.StatusResponse{
		Servers: []*fedv1.ServerStatus{
			{Name: "hub-a", State: "leader", Suffrage: "voter", Health: "alive", GrpcAddress: "127.0.0.1:7400", RaftAddress: "127.0.0.1:7401", AppliedIndex: 120},
			{Name: "hub-b", State: "follower", Suffrage: "voter", Health: "suspect", GrpcAddress: "127.0.0.2:7400", RaftAddress: "127.0.0.2:7401", AppliedIndex: 118},
			{Name: "hub-c", State: "unknown", Suffrage: "nonvoter", Health: "dead"},
		},
		Leader:     "hub-a",
		AnsweredBy: "hub-a",
		Revision:   57,
	}
	clustersFixture = &fedv1.ListClustersResponse{
		Clusters: []*fedv1.ClusterRecord{
			{Name: "east", TrustDomain: "east.meshfed.local", Locality: &fedv1.Locality{Region: "us-east", Zone: "us-east-1a"},
				GatewayAddresses: []string{"10.0.0.1:15443", "10.0.0.2:15443"}, Status: "connected", JoinedAtMs: t0},
			{Name: "west", TrustDomain: "west.meshfed.local", Status: "disconnected", JoinedAtMs: t0 + 60_000},
		},
	}
	servicesFixture = &fedv1.ListServicesResponse{
		Services: []*fedv1.GlobalService{
			{Key: "shop/cart", Exports: []*fedv1.ExportRecord{
				{Cluster: "west", Service: &fedv1.ExportedService{Namespace: "shop", Name: "cart",
					Ports:     []*fedv1.ServicePort{{Port: 8080, Protocol: "HTTP"}},
					Endpoints: []*fedv1.EndpointGroup{{Zone: "b", Ready: 2, Terminating: 1}}}},
				{Cluster: "east", Service: &fedv1.ExportedService{Namespace: "shop", Name: "cart",
					Ports:     []*fedv1.ServicePort{{Port: 8080, Protocol: "HTTP"}, {Port: 9090, Protocol: "grpc"}},
					Endpoints: []*fedv1.EndpointGroup{{Zone: "a", Ready: 1}, {Zone: "b", Ready: 2}}}},
			}},
			{Key: "shop/idle", Exports: []*fedv1.ExportRecord{
				{Cluster: "east", Service: &fedv1.ExportedService{Namespace: "shop", Name: "idle"}},
			}},
		},
	}
	tokensFixture = &fedv1.ListTokensResponse{
		Tokens: []*fedv1.TokenInfo{
			{Id: "tok1", Cluster: "east", CreatedAtMs: t0 - 60_000, ExpiresAtMs: t0 + 60_000, TrustDomain: "east.meshfed.local"},
			{Id: "tok2", Cluster: "east", CreatedAtMs: t0 - 60_000, ExpiresAtMs: t0, Used: true},
			{Id: "tok3", Cluster: "west", CreatedAtMs: t0 - 60_000, ExpiresAtMs: t0 + 60_000, Revoked: true, TrustDomain: "corp.example"},
			{Id: "tok4", Cluster: "west", CreatedAtMs: t0 - 120_000, ExpiresAtMs: t0},
		},
	}
	describeFixture = &fedv1.DescribeClusterResponse{
		Cluster: clustersFixture.Clusters[0],
		Exports: servicesFixture.Services[0].Exports[1:],
		Bundle:  &fedv1.TrustBundle{TrustDomain: "east.meshfed.local", X509Authorities: [][]byte{{1}}, SequenceNumber: 3},
	}
	policiesFixture = &fedv1.ListPoliciesResponse{
		Policies: []*fedv1.TrafficPolicy{
			{Name: "cart-canary", Service: "shop/cart", CreateRevision: 7, ModifyRevision: 9},
		},
	}
)

func TestTables(t *testing.T) {
	now := time.UnixMilli(t0)
	for _, tc := range []struct {
		name  string
		table func(io.Writer)
	}{
		{"status", func(w io.Writer) { statusTable(w, statusFixture) }},
		{"status_no_leader", func(w io.Writer) { statusTable(w, &fedv1.StatusResponse{}) }},
		{"clusters", func(w io.Writer) { clustersTable(w, clustersFixture) }},
		{"describe", func(w io.Writer) { describeClusterTable(w, describeFixture) }},
		{"services", func(w io.Writer) { servicesTable(w, servicesFixture) }},
		{"tokens", func(w io.Writer) { tokensTable(w, tokensFixture, now) }},
		{"policies", func(w io.Writer) { policiesTable(w, policiesFixture.Policies) }},
		{"trust_status", func(w io.Writer) { trustStatusTable(w, trustStatusFixture) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := writeOutput(&buf, formatTable, nil, tc.table); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, tc.name+".table", buf.Bytes())
		})
	}
}

// trustStatusFixture: west rotates (sequence 2, two roots); east holds
// the new bundle, north (connected) does not yet, south is not counted.
var trustStatusFixture = &fedv1.TrustStatusResponse{Revision: 40, Clusters: []*fedv1.ClusterTrustStatus{
	{Cluster: "east", TrustDomain: "east.meshfed.local", SequenceNumber: 1, Roots: 1, Members: []*fedv1.MemberBundleStatus{
		{Cluster: "west", AppliedSequence: 1, Holds: true, Counted: true, Status: "connected"},
	}},
	{Cluster: "west", TrustDomain: "west.meshfed.local", CaRotation: 1, SequenceNumber: 2, Roots: 2, Members: []*fedv1.MemberBundleStatus{
		{Cluster: "east", AppliedSequence: 2, Holds: true, Counted: true, Status: "connected"},
		{Cluster: "north", AppliedSequence: 1, Counted: true, Status: "connected"},
		{Cluster: "south", Status: "disconnected"},
	}},
	{Cluster: "solo", TrustDomain: "solo.meshfed.local"},
}}

func TestStructuredOutput(t *testing.T) {
	for _, f := range []outputFormat{formatJSON, formatYAML} {
		t.Run(string(f), func(t *testing.T) {
			var buf bytes.Buffer
			if err := writeOutput(&buf, f, statusFixture, func(io.Writer) { t.Error("table called") }); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, "status."+string(f), buf.Bytes())
		})
	}
}

func TestTokenState(t *testing.T) {
	now := time.UnixMilli(t0)
	want := []string{"active", "used", "revoked", "expired"}
	for i, tok := range tokensFixture.Tokens {
		if got := tokenState(tok, now); got != want[i] {
			t.Errorf("%s: state %q, want %q", tok.GetId(), got, want[i])
		}
	}
}

// agentStateFixture is what an agent's /state says (decoded as `meshfed
// agent status` decodes it).
const agentStateFixture = `{
  "cluster": "west", "trustDomain": "west.meshfed.local",
  "hub": {"connected": true, "server": "s1", "revision": 42, "fromCache": false, "addresses": ["127.0.0.1:7400"]},
  "exports": [{"key": "default/ratings", "ports": [{"name": "http", "port": 8080, "protocol": "HTTP"}], "ready": 2, "published": true},
              {"key": "default/legacy", "ports": [{"name": "tcp", "port": 9000, "protocol": "TCP"}], "ready": 0, "published": false, "conflict": "port 9000 is TCP here, UDP in east; the oldest export, from cluster east, wins"}],
  "imports": [{"key": "default/reviews", "namespace": "default", "name": "reviews",
               "ports": [{"name": "http", "port": 8080, "protocol": "HTTP"}, {"name": "grpc", "port": 9090, "protocol": "GRPC"}],
               "clusters": [{"cluster": "east", "region": "us-east", "zone": "us-east-1a", "ready": 3, "serving": 3, "terminating": 0, "createRevision": 7}],
               "egressPorts": {"http": 15000}}],
  "clusters": [{"name": "east", "region": "us-east", "zone": "us-east-1a", "gatewayAddresses": ["10.0.0.1:15443"]}],
  "gateways": [{"instance": "west-gw-0", "peer": "10.1.0.7:51234", "since": "2026-11-25T10:00:00Z", "revision": 12,
                "applied": 12, "reported": "2026-11-25T10:00:05Z",
                "health": {"serving": true, "remoteGateways": 2, "remoteGatewaysUp": 1, "activeStreams": 17, "ingress": "10.1.0.7:15443"}},
               {"instance": "west-gw-1", "peer": "10.1.0.8:40000", "since": "2026-11-25T10:01:00Z", "revision": 12}]
}`

func TestAgentStatusTable(t *testing.T) {
	var st agent.State
	if err := json.Unmarshal([]byte(agentStateFixture), &st); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := writeOutput(&buf, formatTable, nil, func(w io.Writer) { agentStateTable(w, &st) }); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "agent_status.table", buf.Bytes())
}
