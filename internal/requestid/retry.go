package requestid

import (
	"context"
	"math/rand/v2"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// AdminWrites are the Admin methods that write: the ones RetryWrites
// retries. Every other Admin method is a read, retried by the client's
// service config (internal/clientconfig).
var AdminWrites = []string{
	fedv1.Admin_CreateToken_FullMethodName,
	fedv1.Admin_RevokeToken_FullMethodName,
	fedv1.Admin_RemoveCluster_FullMethodName,
	fedv1.Admin_PutPolicy_FullMethodName,
	fedv1.Admin_ApplyPolicies_FullMethodName,
	fedv1.Admin_DeletePolicy_FullMethodName,
	fedv1.Admin_PutFederation_FullMethodName,
	fedv1.Admin_DeleteFederation_FullMethodName,
	fedv1.Admin_RotateCA_FullMethodName,
}

// RetryPolicy bounds the retries of one write.
type RetryPolicy struct {
	// MaxAttempts is the number of calls, the first included (at least 1).
	MaxAttempts int
	// InitialBackoff is the longest wait before the second call; each
	// later wait may be twice the previous bound, up to MaxBackoff. A wait
	// is drawn uniformly from [bound/2, bound] so that clients that failed
	// together do not retry together.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}

// DefaultRetryPolicy is what the meshfed CLI uses: five calls over about
// three seconds at most, less if the call's deadline comes first.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{MaxAttempts: 5, InitialBackoff: 200 * time.Millisecond, MaxBackoff: 2 * time.Second}
}

// RetryWrites returns a unary client interceptor for the methods named in
// writes (full method names, as in AdminWrites). Each such call carries a
// request ID, the one ctx already carries (NewOutgoingContext) or a new one,
// and is retried with that same ID while it fails with Unavailable, up to
// p.MaxAttempts calls, never past ctx's deadline: the hub applies it once
// however many calls reach it. Other methods pass through untouched.
//
// When the write still fails with Unavailable or DeadlineExceeded, its
// outcome is unknown; the returned status keeps its code and its message
// names the request ID and the attempts made.
func RetryWrites(writes []string, p RetryPolicy) grpc.UnaryClientInterceptor {
	writes = slices.Clone(writes)
	p.MaxAttempts = max(p.MaxAttempts, 1)
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if !slices.Contains(writes, method) {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		id, ok := fromOutgoing(ctx)
		if !ok {
			id = New()
			ctx = NewOutgoingContext(ctx, id)
		}
		bound := p.InitialBackoff
		for attempt := 1; ; attempt++ {
			err := invoker(ctx, method, req, reply, cc, opts...)
			code := status.Code(err)
			if code != codes.Unavailable || attempt == p.MaxAttempts || !wait(ctx, jitter(bound)) {
				return unknownOutcome(err, id, attempt)
			}
			bound = min(2*bound, p.MaxBackoff)
		}
	}
}

// jitter draws a wait from [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// wait waits d, and reports false without waiting when ctx would end first.
func wait(ctx context.Context, d time.Duration) bool {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// unknownOutcome names the request ID in an error that leaves the write's
// outcome unknown, keeping its code; other results pass unchanged.
func unknownOutcome(err error, id string, attempts int) error {
	st, ok := status.FromError(err)
	if !ok || (st.Code() != codes.Unavailable && st.Code() != codes.DeadlineExceeded) {
		return err
	}
	return status.Errorf(st.Code(), "%s (write with %s %s, %d attempt(s): its outcome is unknown; the hub applies it at most once)", st.Message(), MetadataKey, id, attempts)
}
