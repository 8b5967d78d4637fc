package hub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/clientconfig"
	"github.com/meshfed/meshfed/internal/hubdial"
)

// This file runs hubs of real `meshfed hub` processes, for the tests that a
// crash must be real for: SIGKILL, then a start of a new process on what
// the old one left on disk. (testenv does the same for whole federations
// but wants the Kubernetes control-plane binaries even without clusters.)

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// meshfedBinary builds cmd/meshfed once per test binary.
func meshfedBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "meshfed-hub-test-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "meshfed")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/meshfed/meshfed/cmd/meshfed")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			binErr = fmt.Errorf("go build cmd/meshfed: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// Children are forked from one goroutine locked to its OS thread for the
// life of the test binary: the parent-death signal fires when the forking
// thread exits.
var (
	spawnOnce sync.Once
	spawnReqs chan *exec.Cmd
	spawnErrs chan error
)

func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReqs, spawnErrs = make(chan *exec.Cmd), make(chan error)
		go func() {
			runtime.LockOSThread() // never unlocked
			for c := range spawnReqs {
				spawnErrs <- c.Start()
			}
		}()
	})
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	spawnReqs <- cmd
	return <-spawnErrs
}

// procServer is one `meshfed hub` process. A restart keeps its name, ports,
// data directory and log file.
type procServer struct {
	t        *testing.T
	name     string
	dataDir  string
	logPath  string
	bindAddr string
	// advertiseIP is what the server tells its peers (--advertise); its
	// bind address unless set.
	advertiseIP string
	grpcPort    int
	raftPort    int
	gossipPort  int
	httpPort    int
	args        []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *procServer) grpcAddr() string { return hostPort(p.bindAddr, p.grpcPort) }
func (p *procServer) httpAddr() string { return hostPort(p.bindAddr, p.httpPort) }
func (p *procServer) adminConfig() string {
	return filepath.Join(p.dataDir, "admin.yaml")
}

func hostPort(ip string, port int) string { return ip + ":" + strconv.Itoa(port) }

func (p *procServer) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// launch starts the process without waiting for it to be ready.
func (p *procServer) launch() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = logf.Close() }()
	fmt.Fprintf(logf, "=== start: meshfed %s\n", strings.Join(p.args, " "))
	cmd := exec.Command(meshfedBinary(p.t), p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := spawn(cmd); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.cmd, p.done = cmd, done
	return nil
}

// start launches the process and waits until it answers /readyz. A process
// that exits first is an error carrying its log tail.
func (p *procServer) start(timeout time.Duration) error {
	if err := p.launch(); err != nil {
		return err
	}
	return p.waitReady(timeout)
}

func (p *procServer) waitReady(timeout time.Duration) error {
	p.mu.Lock()
	done, cmd := p.done, p.cmd
	p.mu.Unlock()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("%s exited (%v) before it was ready; log tail:\n%s", p.name, cmd.ProcessState, p.tail(3000))
		default:
		}
		if last = httpReady(p.httpAddr()); last == nil {
			return nil
		}
		select {
		case <-done:
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after %v: %v", p.name, timeout, last)
}

func httpReady(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// kill sends SIGKILL, as a crash would, and waits for the exit.
func (p *procServer) kill() { p.signal(syscall.SIGKILL, 0) }

// pid is the process ID of the running process, 0 if there is none.
func (p *procServer) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// pause stops the process (SIGSTOP): it keeps its sockets but runs no
// code, as a process descheduled for a long time or a VM migration would.
// resume (SIGCONT) lets it go on where it was.
func (p *procServer) pause() error  { return p.sendSignal(syscall.SIGSTOP) }
func (p *procServer) resume() error { return p.sendSignal(syscall.SIGCONT) }

func (p *procServer) sendSignal(sig syscall.Signal) error {
	pid := p.pid()
	if pid == 0 {
		return fmt.Errorf("%s: no process to signal", p.name)
	}
	if err := syscall.Kill(-pid, sig); err != nil {
		return fmt.Errorf("%s: %v: %w", p.name, sig, err)
	}
	return nil
}

// stop sends SIGTERM and waits up to grace for a graceful exit (then kills).
func (p *procServer) stop(grace time.Duration) error {
	if !p.signal(syscall.SIGTERM, grace) {
		return fmt.Errorf("%s did not exit within %v of SIGTERM", p.name, grace)
	}
	return nil
}

// signal reports whether the process exited within grace.
func (p *procServer) signal(sig syscall.Signal, grace time.Duration) bool {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return true
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	if sig != syscall.SIGKILL {
		select {
		case <-done:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // anything left of the group
			return true
		case <-time.After(grace):
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return false
	}
	<-done
	return true
}

func (p *procServer) logSize() int64 {
	fi, err := os.Stat(p.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince returns what the log gained after offset.
func (p *procServer) logSince(offset int64) string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

func (p *procServer) tail(n int64) string {
	return p.logSince(max(p.logSize()-n, 0))
}

// procHub is a hub of `meshfed hub` processes on loopback, bootstrapped
// together with a shared encrypt key, with one admin connection per server
// so that each can be asked for its own view.
type procHub struct {
	t       *testing.T
	servers []*procServer

	connMu sync.Mutex
	conns  map[int]*grpc.ClientConn
}

// startProcHub starts n servers with --bootstrap-expect n, each joining all
// the others, and waits until every one is ready.
func startProcHub(t *testing.T, n int) *procHub {
	t.Helper()
	return startProcHubWith(t, n, procHubOptions{})
}

// procHubOptions changes how startProcHubWith lays out the servers.
type procHubOptions struct {
	// advertise, if set, gives server i's --advertise IP; every server
	// binds 127.0.0.1 and joins the others at their advertised addresses.
	advertise func(i int) string
	// beforeStart runs once every server's ports and arguments are set,
	// before any server starts.
	beforeStart func(h *procHub)
	// extraArgs are appended to every server's arguments.
	extraArgs []string
}

// startProcHubWith is startProcHub with options.
func startProcHubWith(t *testing.T, n int, opts procHubOptions) *procHub {
	t.Helper()
	key, err := GenerateEncryptKey()
	if err != nil {
		t.Fatal(err)
	}
	h := &procHub{t: t, conns: map[int]*grpc.ClientConn{}}
	ports := freePorts(t, 4*n)
	root := t.TempDir()
	for i := range n {
		p := &procServer{t: t, name: fmt.Sprintf("s%d", i), bindAddr: "127.0.0.1", advertiseIP: "127.0.0.1",
			grpcPort: ports[4*i], raftPort: ports[4*i+1], gossipPort: ports[4*i+2], httpPort: ports[4*i+3]}
		if opts.advertise != nil {
			p.advertiseIP = opts.advertise(i)
		}
		p.dataDir = filepath.Join(root, p.name)
		p.logPath = filepath.Join(root, p.name+".log")
		h.servers = append(h.servers, p)
	}
	for i, p := range h.servers {
		p.args = []string{"hub", "--name", p.name, "--data-dir", p.dataDir, "--bind", p.bindAddr,
			"--grpc-port", strconv.Itoa(p.grpcPort), "--raft-port", strconv.Itoa(p.raftPort),
			"--gossip-port", strconv.Itoa(p.gossipPort), "--http-port", strconv.Itoa(p.httpPort),
			"--bootstrap-expect", strconv.Itoa(n), "--gossip-profile", "local", "--encrypt-key", key}
		if opts.advertise != nil {
			p.args = append(p.args, "--advertise", p.advertiseIP)
		}
		for j, o := range h.servers {
			if j != i {
				p.args = append(p.args, "--join", hostPort(o.advertiseIP, o.gossipPort))
			}
		}
		p.args = append(p.args, opts.extraArgs...)
	}
	t.Cleanup(func() {
		for _, p := range h.servers {
			p.kill()
		}
		if t.Failed() {
			for _, p := range h.servers {
				t.Logf("--- %s log tail ---\n%s", p.name, p.tail(4000))
			}
		}
	})
	if opts.beforeStart != nil {
		opts.beforeStart(h)
	}
	for _, p := range h.servers {
		if err := p.launch(); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range h.servers {
		if err := p.waitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// admin returns an admin client of server i alone.
func (h *procHub) admin(i int) fedv1.AdminClient {
	h.t.Helper()
	h.connMu.Lock()
	defer h.connMu.Unlock()
	if c, ok := h.conns[i]; ok {
		return fedv1.NewAdminClient(c)
	}
	cfg, err := clientconfig.Load(h.servers[i].adminConfig())
	if err != nil {
		h.t.Fatal(err)
	}
	cfg.Hubs = []string{h.servers[i].grpcAddr()}
	tlsCfg, err := cfg.TLS()
	if err != nil {
		h.t.Fatal(err)
	}
	c, err := hubdial.Dial(cfg.Hubs, tlsCfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = c.Close() })
	h.conns[i] = c
	return fedv1.NewAdminClient(c)
}

// status asks server i for its own view of the hub.
func (h *procHub) status(i int) (*fedv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return h.admin(i).Status(ctx, &fedv1.StatusRequest{})
}

// leader waits until a running server other than those in not says it is
// the leader, and returns its index.
func (h *procHub) leader(timeout time.Duration, not ...int) int {
	h.t.Helper()
	idx := -1
	waitFor(h.t, timeout, "a leader", func() error {
		for i, p := range h.servers {
			if !p.running() || contains(not, i) {
				continue
			}
			if st, err := h.status(i); err == nil && st.GetLeader() == p.name && st.GetAnsweredBy() == p.name {
				idx = i
				return nil
			}
		}
		return errors.New("no server says it is the leader")
	})
	return idx
}
