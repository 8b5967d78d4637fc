package wait

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	b := Backoff{Min: time.Millisecond, Max: 4 * time.Millisecond}
	calls := 0
	if err := Poll(context.Background(), b, "x", func(context.Context) error {
		calls++
		if calls < 5 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || calls != 5 {
		t.Fatalf("Poll = %v after %d calls, want nil after 5", err, calls)
	}

	stop := errors.New("stop")
	calls = 0
	if err := Poll(context.Background(), b, "x", func(context.Context) error {
		calls++
		return Permanent(stop)
	}); !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("Poll = %v after %d calls, want stop after 1", err, calls)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := Poll(ctx, b, "waiting for x", func(context.Context) error { return errors.New("x is 3") })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "waiting for x: ") || !strings.Contains(err.Error(), "x is 3") {
		t.Fatalf("Poll = %v, want the deadline, the prefix and the last error", err)
	}
}
