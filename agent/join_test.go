package agent

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// scriptedJoin answers Join with the scripted errors, then success.
type scriptedJoin struct {
	errs  []codes.Code
	reqs  []*fedv1.JoinRequest
	times []time.Time
}

func (s *scriptedJoin) Join(_ context.Context, in *fedv1.JoinRequest, _ ...grpc.CallOption) (*fedv1.JoinResponse, error) {
	s.reqs = append(s.reqs, in)
	s.times = append(s.times, time.Now())
	if n := len(s.reqs) - 1; n < len(s.errs) {
		return nil, status.Error(s.errs[n], "scripted")
	}
	return &fedv1.JoinResponse{HubAddresses: []string{"h:1"}}, nil
}

func TestJoinRetriesTransientRefusalsWithTheSameRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		c := &scriptedJoin{errs: []codes.Code{codes.Unavailable, codes.ResourceExhausted, codes.DeadlineExceeded, codes.Unavailable}}
		req := &fedv1.JoinRequest{Token: "t", Csr: []byte("csr")}
		resp, err := joinWithRetries(context.Background(), cfg, c, req)
		if err != nil || resp == nil {
			t.Fatalf("join after transient refusals: %v", err)
		}
		if len(c.reqs) != 5 {
			t.Fatalf("%d calls, want 5", len(c.reqs))
		}
		for i, r := range c.reqs {
			if !proto.Equal(r, req) {
				t.Fatalf("call %d sent another request (a retry must ask for the same key)", i)
			}
		}
		for i := 1; i < len(c.times); i++ {
			if gap := c.times[i].Sub(c.times[i-1]); gap < cfg.ReconnectMin/2 || gap > cfg.ReconnectMax*3/2 {
				t.Fatalf("retry %d after %v, want within the backoff bounds", i, gap)
			}
		}

		// PermissionDenied is final.
		c = &scriptedJoin{errs: []codes.Code{codes.PermissionDenied}}
		if _, err := joinWithRetries(context.Background(), cfg, c, req); status.Code(err) != codes.PermissionDenied || len(c.reqs) != 1 {
			t.Fatalf("refused join: %v after %d calls, want PermissionDenied after 1", err, len(c.reqs))
		}

		// A hub that never answers: JoinTimeout ends it.
		c = &scriptedJoin{errs: make([]codes.Code, 1000)}
		for i := range c.errs {
			c.errs[i] = codes.Unavailable
		}
		start := time.Now()
		if _, err := joinWithRetries(context.Background(), cfg, c, req); err == nil {
			t.Fatal("join against a hub that never answers succeeded")
		}
		if d := time.Since(start); d < cfg.JoinTimeout || d > cfg.JoinTimeout+cfg.ReconnectMax {
			t.Fatalf("gave up after %v, want JoinTimeout %v", d, cfg.JoinTimeout)
		}
	})
}
