package testenv

import (
	"context"
	"time"

	"github.com/meshfed/meshfed/internal/wait"
)

// WaitFor calls cond until it returns nil and returns nil; or, when timeout
// passes or ctx is done first, returns an error that wraps the context's
// error and quotes cond's last error. It polls with a backoff from 10 ms to
// 250 ms and never sleeps past the deadline. Use it instead of sleeping:
//
//	err := testenv.WaitFor(ctx, 10*time.Second, func(ctx context.Context) error {
//		_, err := cs.CoreV1().Services("default").Get(ctx, "reviews", metav1.GetOptions{})
//		return err
//	})
func WaitFor(ctx context.Context, timeout time.Duration, cond func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return poll(ctx, cond)
}

func permanent(err error) error { return wait.Permanent(err) }

func poll(ctx context.Context, cond func(ctx context.Context) error) error {
	return wait.Poll(ctx, wait.Backoff{Min: 10 * time.Millisecond, Max: 250 * time.Millisecond}, "testenv: waiting", cond)
}
