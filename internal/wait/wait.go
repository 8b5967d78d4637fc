// Package wait polls a condition with a backoff until it holds, a deadline
// passes or the condition says stop: the one polling loop of testenv and
// its kind backend, so that no test sleeps to synchronise.
package wait

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Backoff bounds the delay between two calls of the condition: it starts
// at Min and doubles up to Max.
type Backoff struct{ Min, Max time.Duration }

// Poll calls cond until it returns nil and returns nil. It returns at once
// the error wrapped by Permanent when cond returns one. When ctx is done
// first it returns an error, prefixed by what, that wraps ctx's error and
// quotes cond's last error. The first call is immediate.
func Poll(ctx context.Context, b Backoff, what string, cond func(ctx context.Context) error) error {
	delay := b.Min
	t := time.NewTimer(0)
	defer t.Stop()
	var last error
	for {
		select {
		case <-ctx.Done():
			if last == nil {
				return fmt.Errorf("%s: %w", what, ctx.Err())
			}
			return fmt.Errorf("%s: %w; last error: %v", what, ctx.Err(), last)
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
		delay = min(2*delay, b.Max)
	}
}

// permanentError stops a Poll at once.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent wraps err so that Poll returns it at once.
func Permanent(err error) error { return permanentError{err} }
