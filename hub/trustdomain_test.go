package hub

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// wantRefusal fails unless err has code and its message names field.
func wantRefusal(t *testing.T, what string, err error, code codes.Code, field string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), field) {
		t.Fatalf("%s: %v, want %v naming %s", what, err, code, field)
	}
}

func TestJoinTokensBindTheClusterTrustDomain(t *testing.T) {
	h := newTestHub(t, 3)
	admin := h.Admin()
	ctx := ctxT(t, 60*time.Second)
	create := func(cluster, td string) (*fedv1.CreateTokenResponse, error) {
		return admin.CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: cluster, TrustDomain: td})
	}

	// The default is <cluster>.meshfed.local, and a join must use it.
	tok, err := create("east", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.GetInfo().GetTrustDomain(); got != "east.meshfed.local" {
		t.Fatalf("default bound trust domain %q, want east.meshfed.local", got)
	}
	_, _, err = joinTD(ctx, tok.GetToken(), "east", "corp.example")
	wantRefusal(t, "join with another trust domain than the token's", err, codes.PermissionDenied, "trust_bundle.trust_domain")
	if _, _, err := join(ctx, tok.GetToken(), "east"); err != nil {
		t.Fatalf("join with the bound trust domain (the refused join must not have used the token): %v", err)
	}

	// Reserved: the hub's own trust domain, at token create and at join.
	_, err = create("west", "hub.meshfed")
	wantRefusal(t, "token for the hub's trust domain", err, codes.InvalidArgument, "trust_domain")
	wtok, err := create("west", "")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = joinTD(ctx, wtok.GetToken(), "west", "hub.meshfed")
	wantRefusal(t, "join with the hub's trust domain", err, codes.InvalidArgument, "trust_bundle.trust_domain")

	// Reserved: another member's trust domain.
	_, err = create("west", "east.meshfed.local")
	wantRefusal(t, "token for another member's trust domain", err, codes.FailedPrecondition, "trust_domain")

	// Reserved: externally federated trust domains, at create and at join
	// (federated after the token was made).
	ext := newExternalEndpoint(t, "spire.example", false)
	if _, err := admin.PutFederation(ctx, &fedv1.PutFederationRequest{Federation: ext.relationship()}); err != nil {
		t.Fatal(err)
	}
	_, err = create("west", "spire.example")
	wantRefusal(t, "token for a federated trust domain", err, codes.FailedPrecondition, "trust_domain")
	late := newExternalEndpoint(t, "late.example", false)
	ltok, err := create("west", "late.example")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.PutFederation(ctx, &fedv1.PutFederationRequest{Federation: late.relationship()}); err != nil {
		t.Fatal(err)
	}
	_, _, err = joinTD(ctx, ltok.GetToken(), "west", "late.example")
	wantRefusal(t, "join with a trust domain federated since the token", err, codes.FailedPrecondition, "trust_bundle.trust_domain")
	hubFed := newExternalEndpoint(t, "hub.meshfed", false)
	_, err = admin.PutFederation(ctx, &fedv1.PutFederationRequest{Federation: hubFed.relationship()})
	wantRefusal(t, "federation with the hub's own trust domain", err, codes.FailedPrecondition, "federation.trust_domain")

	// A rejoin under a new trust domain takes the old bundle away.
	rtok, err := create("east", "east2.example")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := joinTD(ctx, rtok.GetToken(), "east", "east2.example"); err != nil {
		t.Fatalf("rejoin under a new trust domain: %v", err)
	}
	bundles, err := admin.ListBundles(ctx, &fedv1.ListBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	owned := map[string]string{}
	for _, b := range bundles.GetBundles() {
		owned[b.GetBundle().GetTrustDomain()] = b.GetCluster()
	}
	if _, ok := owned["east.meshfed.local"]; ok {
		t.Fatal("the old trust domain's bundle is still there after a rejoin under a new one")
	}
	if owned["east2.example"] != "east" {
		t.Fatalf("bundles after the rejoin: %v, want east2.example owned by east", owned)
	}
	// The freed trust domain may be bound again.
	if _, err := create("west", "east.meshfed.local"); err != nil {
		t.Fatalf("token for a trust domain freed by a rejoin: %v", err)
	}
}
