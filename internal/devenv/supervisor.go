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
}

// PID is the running process's id, 0 while there is none.
func (c *child) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pid
}

func (c *child) setPID(pid int) {
	c.mu.Lock()
	c.pid = pid
	c.mu.Unlock()
}

// errExitedOK is what an exit with status 0 is reported as: for a
// long-running child that is still an unexpected exit.
var errExitedOK = errors.New("exited with status 0")

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
		var ran time.Duration
		args, err := c.prepare(ctx)
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
		s.onExit(c, err, ran)
		delay = s.policy.Next(delay, ran)
		s.log.Warn("restarting after a backoff", "child", c.name, "in", delay, "ran", ran.Round(time.Millisecond))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
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
	select {
	case err := <-exited:
		if err == nil {
			err = errExitedOK
		}
		return err
	case <-ctx.Done():
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
