package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meshfed/meshfed/internal/wait"
)

// ErrNotRunning is returned by the [Process] methods that need a running
// process when it is not running.
var ErrNotRunning = errors.New("testenv: process is not running")

// Process is a program that testenv runs: an etcd, a kube-apiserver or a hub
// server. It runs in its own process group, so that killing it kills
// everything it started, with its output appended to one log file across
// restarts. The methods are safe for concurrent use.
//
// A Process is killed when its [Federation] is closed. It is also killed if
// the test binary dies first: it is started with a parent-death signal
// (SIGKILL), from a goroutine locked to an OS thread that lives as long as the
// test binary.
type Process struct {
	name         string
	path         string
	args         []string
	logPath      string
	ready        func(ctx context.Context) error // nil: started is ready
	readyTimeout time.Duration

	mu      sync.Mutex
	cmd     *exec.Cmd     // nil before the first start
	done    chan struct{} // closed when cmd has exited
	running bool
	paused  bool
	starts  int
}

type processSpec struct {
	name         string
	path         string
	args         []string
	logPath      string
	ready        func(ctx context.Context) error
	readyTimeout time.Duration
}

func newProcess(s processSpec) *Process {
	return &Process{name: s.name, path: s.path, args: s.args, logPath: s.logPath,
		ready: s.ready, readyTimeout: s.readyTimeout}
}

// Name is the process's name within its federation, such as "east/etcd" or
// "hub/s0".
func (p *Process) Name() string { return p.name }

// LogPath is the file that collects the process's stdout and stderr.
func (p *Process) LogPath() string { return p.logPath }

// Args returns a copy of the command-line arguments (without the program).
func (p *Process) Args() []string { return append([]string(nil), p.args...) }

// Pid is the process ID (also its process group ID), or 0 when it is not
// running.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process has been started and has not exited.
// A paused process is running.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running
}

// Exited returns a channel closed when the current run of the process ends,
// or an already closed channel when it is not running.
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

// Start starts the process if it is not running and waits until it is ready
// (for etcd and kube-apiserver: their health endpoints answer; for a hub
// server: /readyz). Starting a running process is an error.
func (p *Process) Start() error {
	if err := p.launch(); err != nil {
		return err
	}
	return p.waitReady()
}

// Restart kills the process (if it is running) and starts it again with the
// same arguments, data and ports, then waits until it is ready.
func (p *Process) Restart() error {
	if err := p.Kill(); err != nil && !errors.Is(err, ErrNotRunning) {
		return err
	}
	return p.Start()
}

// Kill sends SIGKILL to the process group, as a crash would, and waits until
// the process has exited. It returns ErrNotRunning if it was not running.
func (p *Process) Kill() error {
	return p.stop(syscall.SIGKILL, 0)
}

// Stop asks the process to exit with SIGTERM, and kills it if it has not
// exited within grace. It returns ErrNotRunning if it was not running.
func (p *Process) Stop(grace time.Duration) error {
	return p.stop(syscall.SIGTERM, grace)
}

// Pause stops the process group with SIGSTOP: the process keeps its sockets
// but answers nothing, like a machine that hangs.
// It returns once every thread of the process is stopped (SIGSTOP is
// asynchronous: a thread running on another CPU stops a moment later), so
// nothing it does after Pause returns is answered.
func (p *Process) Pause() error {
	if err := p.signal(syscall.SIGSTOP, true); err != nil {
		return err
	}
	pid := p.Pid()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return wait.Poll(ctx, wait.Backoff{Min: time.Millisecond, Max: 20 * time.Millisecond}, "pause "+p.name, func(context.Context) error {
		return allThreadsStopped(pid)
	})
}

// allThreadsStopped reports (nil) whether every thread of pid is in state
// T (stopped) per /proc/<pid>/task/*/stat (Linux only).
func allThreadsStopped(pid int) error {
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return wait.Permanent(err)
	}
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + t.Name() + "/stat")
		if err != nil {
			continue // the thread exited
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) {
			continue
		}
		if st := b[i+2]; st != 'T' && st != 't' {
			return fmt.Errorf("thread %s is in state %c", t.Name(), st)
		}
	}
	return nil
}

// Resume continues a paused process group with SIGCONT.
func (p *Process) Resume() error {
	return p.signal(syscall.SIGCONT, false)
}

// Paused reports whether the process is paused.
func (p *Process) Paused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running && p.paused
}

// RSS is the resident set size of the process in bytes, from VmRSS in
// /proc/<pid>/status (Linux only).
func (p *Process) RSS() (int64, error) {
	pid := p.Pid()
	if pid == 0 {
		return 0, ErrNotRunning
	}
	return rssOf(pid)
}

// Tail returns up to the last n bytes of the process's log.
func (p *Process) Tail(n int) string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if off := fi.Size() - int64(n); off > 0 {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return fmt.Sprintf("(no log: %v)", err)
		}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// setArgs replaces the arguments of the next start.
func (p *Process) setArgs(args []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.args = args
}

func (p *Process) launch() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running {
		return fmt.Errorf("testenv: %s is already running", p.name)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("testenv: %s: %w", p.name, err)
	}
	defer func() { _ = logf.Close() }() // the child has its own descriptor
	p.starts++
	fmt.Fprintf(logf, "=== testenv: start #%d: %s %s\n", p.starts, p.path, strings.Join(p.args, " "))
	cmd := exec.Command(p.path, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := spawn(cmd); err != nil {
		return fmt.Errorf("testenv: start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status is in cmd.ProcessState
		p.mu.Lock()
		if p.cmd == cmd {
			p.running, p.paused = false, false
		}
		p.mu.Unlock()
		close(done)
	}()
	p.cmd, p.done, p.running, p.paused = cmd, done, true, false
	return nil
}

func (p *Process) waitReady() error {
	if p.ready == nil {
		return nil
	}
	timeout := p.readyTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	exited := p.Exited()
	err := poll(ctx, func(ctx context.Context) error {
		select {
		case <-exited:
			return permanent(errExited)
		default:
		}
		return p.ready(ctx)
	})
	switch {
	case errors.Is(err, errExited):
		return fmt.Errorf("testenv: %s %w (%s) before it was ready; log tail:\n%s",
			p.name, errExited, p.exitState(), p.Tail(2000))
	case err != nil:
		return fmt.Errorf("testenv: %s not ready after %v: %w", p.name, timeout, err)
	}
	return nil
}

// errExited is wrapped by the error of a process that exited before it was
// ready (the callers retry with new ports).
var errExited = errors.New("exited")

func (p *Process) exitState() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.ProcessState == nil {
		return "unknown status"
	}
	return p.cmd.ProcessState.String()
}

func (p *Process) stop(sig syscall.Signal, grace time.Duration) error {
	p.mu.Lock()
	if !p.running {
		p.mu.Unlock()
		return ErrNotRunning
	}
	pgid, done := p.cmd.Process.Pid, p.done
	p.mu.Unlock()

	if err := killGroup(pgid, sig); err != nil {
		return fmt.Errorf("testenv: signal %s: %w", p.name, err)
	}
	if sig != syscall.SIGKILL {
		_ = killGroup(pgid, syscall.SIGCONT) // a paused process must run to exit
		select {
		case <-done:
			// The leader is gone; make sure nothing else of the group is left.
			_ = killGroup(pgid, syscall.SIGKILL)
			return nil
		case <-time.After(grace):
		}
		if err := killGroup(pgid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("testenv: kill %s: %w", p.name, err)
		}
	}
	select {
	case <-done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("testenv: %s (pid %d) did not exit 30s after SIGKILL", p.name, pgid)
	}
}

func (p *Process) signal(sig syscall.Signal, paused bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		return ErrNotRunning
	}
	if err := killGroup(p.cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("testenv: signal %s: %w", p.name, err)
	}
	p.paused = paused
	return nil
}

// killGroup signals every process in group pgid. A group that is already
// gone is not an error.
func killGroup(pgid int, sig syscall.Signal) error {
	err := syscall.Kill(-pgid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

func rssOf(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "VmRSS:" && f[2] == "kB" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("testenv: VmRSS of %d: %w", pid, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("testenv: no VmRSS in /proc/%d/status", pid)
}

// Processes are forked from one goroutine locked to its OS thread for the
// life of the test binary: the parent-death signal fires when the thread
// that forked the child exits, and a Go thread can exit while the program
// lives on.
var (
	spawnOnce sync.Once
	spawnReqs chan spawnReq
)

type spawnReq struct {
	cmd *exec.Cmd
	err chan error
}

func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the program
			for r := range spawnReqs {
				r.err <- r.cmd.Start()
			}
		}()
	})
	r := spawnReq{cmd: cmd, err: make(chan error, 1)}
	spawnReqs <- r
	return <-r.err
}
