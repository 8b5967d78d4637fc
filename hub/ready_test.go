package hub

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
)

// A restarted server serves TLS at once with the certificate it had, and
// until it has caught up far enough to hold the hub CA it answers every
// call Unavailable with the reason, never a bare TLS failure. (Before, for
// 0.2-2.6 s after a restart it failed handshakes with "tls: internal
// error"; here, with no peer up, that would last until one returns.)
func TestRestartedServerAnswersNotReadyWithAReason(t *testing.T) {
	h := newTestHub(t, 3)
	for i := range 3 {
		h.Kill(i)
	}
	h.Start(0) // alone: no leader, nothing of its log applied
	admin := h.Admin(0)
	calls := map[string]func(ctx context.Context) error{
		"ListPolicies": func(ctx context.Context) error {
			_, err := admin.ListPolicies(ctx, &fedv1.ListPoliciesRequest{})
			return err
		},
		"PutPolicy": func(ctx context.Context) error {
			_, err := admin.PutPolicy(ctx, &fedv1.PutPolicyRequest{Policy: testPolicy("p", "r")})
			return err
		},
		"CreateToken": func(ctx context.Context) error {
			_, err := admin.CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "east"})
			return err
		},
	}
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := call(ctx)
		cancel()
		st := status.Convert(err)
		if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "hub: not ready: no leader known") {
			t.Errorf("%s on a restarted server without a leader: %v; want Unavailable, \"hub: not ready: no leader known...\"", name, err)
		}
	}
	// Status answers regardless: it is how an operator sees why.
	ctx := ctxT(t, 5*time.Second)
	st, err := admin.Status(ctx, &fedv1.StatusRequest{})
	if err != nil || st.GetAnsweredBy() != "s0" || st.GetLeader() != "" {
		t.Fatalf("Status on a server that is not ready: %v, %v; want s0's view without a leader", st, err)
	}
	if err := h.Server(0).Ready(ctx); err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("Ready = %v, want not ready", err)
	}

	h.Start(1)
	waitFor(t, 20*time.Second, "s0 serving reads again", func() error {
		_, err := admin.ListPolicies(ctx, &fedv1.ListPoliciesRequest{})
		return err
	})
}

// A follower that forwards a write says so when the leader refuses it or
// cannot be reached; what the FSM refuses reads the same on every server.
func TestForwardedErrorsNameTheLeader(t *testing.T) {
	h := newTestHub(t, 3)
	l := h.Leader(20 * time.Second)
	f := (l + 1) % 3
	ctx := ctxT(t, 10*time.Second)
	_, err := h.Server(f).apply(ctx, fsm.MessageType(99), &hubpb.CmdPutPolicy{})
	want := fmt.Sprintf("hub: forwarded to leader s%d: command:", l)
	if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), want) {
		t.Fatalf("unknown command forwarded by s%d: %v; want InvalidArgument %q...", f, err, want)
	}
	// Refused by the FSM: not a forwarding error.
	_, err = h.Admin(f).RemoveCluster(ctx, &fedv1.RemoveClusterRequest{Name: "nosuch"})
	if status.Code(err) != codes.NotFound || strings.Contains(err.Error(), "forwarded") {
		t.Fatalf("RemoveCluster of an unknown cluster through s%d: %v; want NotFound from the FSM", f, err)
	}
}

func TestForwardedErrCodes(t *testing.T) {
	for _, tc := range []struct{ in, want codes.Code }{
		{codes.Unknown, codes.Unavailable}, {codes.Canceled, codes.Unavailable},
		{codes.Unavailable, codes.Unavailable}, {codes.InvalidArgument, codes.InvalidArgument},
		{codes.DeadlineExceeded, codes.DeadlineExceeded},
	} {
		err := forwardedErr("s1", "", status.Error(tc.in, "hub: boom"))
		if got := status.Convert(err); got.Code() != tc.want || got.Message() != "hub: forwarded to leader s1: boom" {
			t.Errorf("forwardedErr(%v) = %v, %q; want %v", tc.in, got.Code(), got.Message(), tc.want)
		}
	}
}
