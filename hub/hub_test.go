package hub

import (
	"context"
	"testing"
	"time"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

func TestThreeServersBootstrapAndServe(t *testing.T) {
	h := newTestHub(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin := h.Admin()
	st, err := admin.Status(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetLeader() == "" || len(st.GetServers()) != 3 {
		t.Fatalf("status: %v", st)
	}
	for i := 0; i < 3; i++ {
		resp, err := h.Admin(i).CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "east"})
		if err != nil {
			t.Fatalf("server %d create token: %v", i, err)
		}
		if resp.GetToken() == "" {
			t.Fatal("empty token")
		}
	}
	for i := 0; i < 3; i++ {
		toks, err := h.Admin(i).ListTokens(ctx, &fedv1.ListTokensRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(toks.GetTokens()) != 3 {
			t.Fatalf("server %d sees %d tokens, want 3", i, len(toks.GetTokens()))
		}
	}
}
