package devenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// child is one supervised process of the meshfed binary.
type child struct {
	name    string   // e.g. s0, east-agent, east-gateway, east-reviews-0
	logPath string   // stdout and stderr, appended across restarts
	env     []string // added to the supervisor's environment
	// prepare returns the arguments of the next start. It may block until
	// the child can start (a file to appear, a token to be created); it
	// returns when ctx is done.
	prepare func(ctx context.Context) ([]string, error)

	mu  sync.Mutex
	pid int // 0 while not running
	// held is set while the child is failed on purpose (Env.Fail): the
	// supervisor stops it (SIGKILL) and does not start it again until it
	// is released. parked is set while the supervisor waits for that.
	held, parked bool
	// changed is closed (and replaced) whenever pid, held or parked
	// changes.
	changed chan struct{}
}

// state returns the child's pid, held and parked, and a channel closed at
// the next change of any of them.
func (c *child) state() (pid int, held, parked bool, changed <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.changed == nil {
		c.changed = make(chan struct{})
	}
	return c.pid, c.held, c.parked, c.changed
}

// update changes the child's state under its lock and wakes every waiter.
func (c *child) update(fn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn()
	if c.changed != nil {
		close(c.changed)
	}
	c.changed = make(chan struct{})
}

// setHeld holds (true) or releases (false) the child, and reports whether
// that changed anything.
func (c *child) setHeld(h bool) bool {
	var was bool
	c.update(func() { was, c.held = c.held, h })
	return was != h
}

// Held reports whether the child is failed on purpose.
func (c *child) Held() bool {
	_, held, _, _ := c.state()
	return held
}

// waitFor returns once cond holds for the child's state, or ctx's error.
func (c *child) waitFor(ctx context.Context, cond func(pid int, held, parked bool) bool) error {
	for {
		pid, held, parked, changed := c.state()
		if cond(pid, held, parked) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// heldContext returns a context that is done with ctx or once the child is
// held.
func (c *child) heldContext(ctx context.Context) (context.Context, context.CancelFunc) {
	hctx, cancel := context.WithCancel(ctx)
	go func() {
		defer cancel()
		_ = c.waitFor(hctx, func(_ int, held, _ bool) bool { return held })
	}()
	return hctx, cancel
}

// PID is the running process's id, 0 while there is none.
func (c *child) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pid
}

func (c *child) setPID(pid int) { c.update(func() { c.pid = pid }) }

// errExitedOK is what an exit with status 0 is reported as: for a
// long-running child that is still an unexpected exit.
var errExitedOK = errors.New("exited with status 0")

// errHeld is what runOnce returns for a child it killed because it was
// held.
var errHeld = errors.New("failed on purpose")

// supervisor runs children, restarting each one that exits after a
// backoff, until its context is done; then it stops them: SIGTERM, and
// SIGKILL after stopTimeout.
type supervisor struct {
	binary      string
	policy      RestartPolicy
	stopTimeout time.Duration
	log         *slog.Logger
	// onStart is called, from the child's goroutine, after each start.
	onStart func(c *child)
	// onExit is called, from the child's goroutine, after each exit (or
	// failed start or prepare), with why and how long it ran, before the
	// restart backoff.
	onExit func(c *child, err error, ran time.Duration)

	wg sync.WaitGroup
}

// run supervises c until ctx is done.
func (s *supervisor) run(ctx context.Context, c *child) {
	s.wg.Go(func() { s.loop(ctx, c) })
}

// wait returns once every child's supervision ended (after ctx is done,
// every child has exited).
func (s *supervisor) wait() { s.wg.Wait() }

func (s *supervisor) loop(ctx context.Context, c *child) {
	var delay time.Duration
	for {
		if err := s.park(ctx, c); err != nil {
			return
		}
		var ran time.Duration
		pctx, cancel := c.heldContext(ctx)
		args, err := c.prepare(pctx)
		cancel()
		if c.Held() {
			continue // park
		}
		if err == nil {
			started := time.Now()
			err = s.runOnce(ctx, c, args)
			ran = time.Since(started)
		} else {
			err = fmt.Errorf("prepare: %w", err)
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errHeld) {
			delay = 0 // released, it starts at once
			continue
		}
		s.onExit(c, err, ran)
		delay = s.policy.Next(delay, ran)
		s.log.Warn("restarting after a backoff", "child", c.name, "in", delay, "ran", ran.Round(time.Millisecond))
		hctx, cancel := c.heldContext(ctx)
		t := time.NewTimer(delay)
		select {
		case <-hctx.Done(): // stopped, or held (then it parks)
		case <-t.C:
		}
		t.Stop()
		cancel()
		if ctx.Err() != nil {
			return
		}
	}
}

// park returns at once if c is not held; otherwise it marks c parked and
// waits until c is released (nil) or ctx is done (its error).
func (s *supervisor) park(ctx context.Context, c *child) error {
	if !c.Held() {
		return ctx.Err()
	}
	c.update(func() { c.parked = true })
	defer c.update(func() { c.parked = false })
	s.log.Info("held: not restarting it until it is healed", "child", c.name)
	return c.waitFor(ctx, func(_ int, held, _ bool) bool { return !held })
}

// runOnce starts c with args and returns when it has exited: why it
// exited, or ctx's error once ctx is done and it was stopped.
func (s *supervisor) runOnce(ctx context.Context, c *child, args []string) error {
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = logf.Close() }()
	cmd := exec.Command(s.binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(cmd.Environ(), c.env...)
	if err := start(cmd); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	c.setPID(pid)
	defer c.setPID(0)
	s.log.Info("started", "child", c.name, "pid", pid)
	s.onStart(c)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for {
		_, held, _, changed := c.state()
		if held {
			// A failure, as real as it gets: no chance to drain.
			_ = signalChild(pid, syscall.SIGKILL)
			err := <-exited
			s.log.Info("killed on purpose", "child", c.name, "pid", pid, "exit", err)
			return errHeld
		}
		select {
		case err := <-exited:
			if err == nil {
				err = errExitedOK
			}
			return err
		case <-changed:
			continue
		case <-ctx.Done():
		}
		break
	}
	_ = signalChild(pid, syscall.SIGTERM)
	t := time.NewTimer(s.stopTimeout)
	defer t.Stop()
	select {
	case err := <-exited:
		s.log.Debug("stopped", "child", c.name, "pid", pid, "exit", err)
	case <-t.C:
		s.log.Warn("did not stop after SIGTERM; killing it", "child", c.name, "pid", pid, "after", s.stopTimeout)
		_ = signalChild(pid, syscall.SIGKILL)
		err := <-exited
		s.log.Debug("killed", "child", c.name, "pid", pid, "exit", err)
	}
	return ctx.Err()
}

// tail returns the last n bytes of the file at path, or why not.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil {
		return err.Error()
	}
	return string(b)
}
