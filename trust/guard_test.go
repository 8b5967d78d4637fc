package trust

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestConnGuardClosesWithdrawnTrustDomains(t *testing.T) {
	f := newFedFixture(t)
	// A client of the federated b.test, and one of a.test (local).
	bLeaf := forgeLeaf(t, f.bRoot, "spiffe://b.test/meshfed/gateway")
	aSVID, err := f.aCA.IssueX509SVID(GatewayID(f.aCA.TrustDomain()))
	if err != nil {
		t.Fatal(err)
	}
	guard := NewConnGuard(f.bundles)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- guard.Run(ctx) }()

	sB, cB, serr, cerr := tlsPair(t, f.serverTLS(AuthorizeFederated()), f.clientTLS(svidOf(t, bLeaf, f.bRoot)))
	if serr != nil || cerr != nil {
		t.Fatalf("b.test handshake: server %v, client %v", serr, cerr)
	}
	sA, _, serr, cerr := tlsPair(t, f.serverTLS(AuthorizeFederated()), f.clientTLS(aSVID))
	if serr != nil || cerr != nil {
		t.Fatalf("a.test handshake: server %v, client %v", serr, cerr)
	}
	untrackB := guard.Track(sB)
	defer untrackB()
	defer guard.Track(sA)()
	if n := guard.Tracked(); n != 2 {
		t.Fatalf("tracked %d, want 2", n)
	}

	// A new bundle for b.test (a rotation) closes nothing.
	if err := f.bundles.Set(bundleOf(t, "b.test", f.bRoot, forgeCA(t, nil, "b.test"))); err != nil {
		t.Fatal(err)
	}
	if n := guard.Check(); n != 0 {
		t.Fatalf("a bundle update closed %d connections", n)
	}

	// Withdrawing b.test closes its connection, and only it: the client
	// sees the connection end.
	f.bundles.Remove(spiffeid.RequireTrustDomainFromString("b.test"))
	if err := cB.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := cB.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("client of the withdrawn trust domain read %v, want EOF", err)
	}
	if got := guard.Closed(); got != 1 {
		t.Errorf("closed %d, want 1", got)
	}
	if n := guard.Tracked(); n != 1 {
		t.Errorf("tracked %d after the withdrawal, want 1 (a.test)", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
