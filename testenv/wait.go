package testenv

import (
	"context"
	"errors"
	"fmt"
	"time"
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

// permanentError stops a poll at once.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return permanentError{err} }

func poll(ctx context.Context, cond func(ctx context.Context) error) error {
	const maxDelay = 250 * time.Millisecond
	delay := 10 * time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	var last error
	for {
		select {
		case <-ctx.Done():
			if last == nil {
				return fmt.Errorf("testenv: waiting: %w", ctx.Err())
			}
			return fmt.Errorf("testenv: waiting: %w; last error: %v", ctx.Err(), last)
		case <-t.C:
		}
		last = cond(ctx)
		if last == nil {
			return nil
		}
		var p permanentError
		if errors.As(last, &p) {
			return p.err
		}
		t.Reset(delay)
		delay = min(2*delay, maxDelay)
	}
}
