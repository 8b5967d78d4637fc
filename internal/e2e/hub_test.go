package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meshfed-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "meshfed")
	build := exec.Command("go", "build", "-o", binary, "github.com/meshfed/meshfed/cmd/meshfed")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build meshfed:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

type proc struct {
	name string
	args []string
	dir  string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	http int
}

type hub struct {
	t     *testing.T
	procs []*proc
	key   string
}

func freePort(t *testing.T) int {
	t.Helper()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		if u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
			_ = u.Close()
			return p
		}
	}
}

func run(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("meshfed %v: %w: %s", args, err, stderr.String())
	}
	return out, nil
}

func startHub(t *testing.T, n int) *hub {
	t.Helper()
	keyOut, err := run(t, "hub", "keygen")
	if err != nil {
		t.Fatal(err)
	}
	h := &hub{t: t, key: string(bytes.TrimSpace(keyOut))}
	root := t.TempDir()
	gossip0 := 0
	for i := 0; i < n; i++ {
		p := &proc{name: fmt.Sprintf("s%d", i), dir: filepath.Join(root, fmt.Sprintf("s%d", i)), http: freePort(t)}
		gossip := freePort(t)
		if i == 0 {
			gossip0 = gossip
		}
		p.args = []string{"hub", "--name", p.name, "--data-dir", p.dir, "--bind", "127.0.0.1",
			"--grpc-port", strconv.Itoa(freePort(t)), "--raft-port", strconv.Itoa(freePort(t)),
			"--gossip-port", strconv.Itoa(gossip), "--http-port", strconv.Itoa(p.http),
			"--bootstrap-expect", strconv.Itoa(n), "--join", "127.0.0.1:" + strconv.Itoa(gossip0),
			"--gossip-profile", "local", "--encrypt-key", h.key}
		h.procs = append(h.procs, p)
	}
	for i := range h.procs {
		h.start(i)
	}
	t.Cleanup(func() {
		for i := range h.procs {
			h.kill(i)
		}
		if t.Failed() {
			for _, p := range h.procs {
				b, _ := os.ReadFile(filepath.Join(filepath.Dir(p.dir), p.name+".log"))
				if len(b) > 4000 {
					b = b[len(b)-4000:]
				}
				t.Logf("--- %s log (tail) ---\n%s", p.name, b)
			}
		}
	})
	h.waitReady()
	return h
}

func (h *hub) start(i int) {
	h.t.Helper()
	p := h.procs[i]
	p.cmd = exec.Command(binary, p.args...)
	logf, err := os.OpenFile(filepath.Join(filepath.Dir(p.dir), p.name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		h.t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		_ = logf.Close()
		close(done)
	}(p.cmd, p.done)
}

// kill sends SIGKILL: no graceful leave, no flush beyond what was fsynced.
func (h *hub) kill(i int) {
	p := h.procs[i]
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	p.cmd = nil
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		<-time.After(50 * time.Millisecond)
	}
}

func (h *hub) waitReady() {
	h.t.Helper()
	waitFor(h.t, 60*time.Second, "all hub servers ready", func() error {
		for _, p := range h.procs {
			if p.cmd == nil {
				continue
			}
			select {
			case <-p.done:
				h.t.Fatalf("%s exited: %v", p.name, p.cmd.ProcessState)
			default:
			}
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", p.http))
			if err != nil {
				return err
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: readyz %d", p.name, resp.StatusCode)
			}
		}
		return nil
	})
}

// config returns the admin.yaml of a running server.
func (h *hub) config() string {
	for _, p := range h.procs {
		if p.cmd != nil {
			return filepath.Join(p.dir, "admin.yaml")
		}
	}
	h.t.Fatal("no running server")
	return ""
}

func (h *hub) leader() string {
	h.t.Helper()
	var leader string
	waitFor(h.t, 30*time.Second, "a leader", func() error {
		out, err := run(h.t, "hub", "status", "-o", "json", "--config", h.config())
		if err != nil {
			return err
		}
		var st struct {
			Leader string `json:"leader"`
		}
		if err := json.Unmarshal(out, &st); err != nil {
			return err
		}
		if st.Leader == "" {
			return fmt.Errorf("no leader yet")
		}
		for _, p := range h.procs {
			if p.name == st.Leader && p.cmd == nil {
				return fmt.Errorf("leader %s is the dead server", st.Leader)
			}
		}
		leader = st.Leader
		return nil
	})
	return leader
}

func (h *hub) createToken(cluster string) string {
	h.t.Helper()
	var id string
	waitFor(h.t, 30*time.Second, "token create", func() error {
		out, err := run(h.t, "token", "create", "--cluster", cluster, "-o", "json", "--config", h.config())
		if err != nil {
			return err
		}
		var resp struct {
			Token string `json:"token"`
			Info  struct {
				ID string `json:"id"`
			} `json:"info"`
		}
		if err := json.Unmarshal(out, &resp); err != nil {
			return err
		}
		id = resp.Info.ID
		return nil
	})
	return id
}

func (h *hub) tokenIDs() map[string]bool {
	h.t.Helper()
	ids := map[string]bool{}
	waitFor(h.t, 30*time.Second, "token list", func() error {
		out, err := run(h.t, "token", "list", "-o", "json", "--config", h.config())
		if err != nil {
			return err
		}
		var resp struct {
			Tokens []struct {
				ID string `json:"id"`
			} `json:"tokens"`
		}
		if err := json.Unmarshal(out, &resp); err != nil {
			return err
		}
		for _, tk := range resp.Tokens {
			ids[tk.ID] = true
		}
		return nil
	})
	return ids
}

// TestHubProcesses runs three real `meshfed hub` processes: the leader is
// SIGKILLed and a new one takes writes; then all three are SIGKILLed and
// restarted, and every acknowledged write is still there.
func TestHubProcesses(t *testing.T) {
	h := startHub(t, 3)
	var acked []string
	for i := 0; i < 3; i++ {
		acked = append(acked, h.createToken("east"))
	}
	old := h.leader()
	for i, p := range h.procs {
		if p.name == old {
			h.kill(i)
		}
	}
	if l := h.leader(); l == old {
		t.Fatalf("leader is still %s", old)
	}
	for i := 0; i < 3; i++ {
		acked = append(acked, h.createToken("west"))
	}
	for i := range h.procs {
		h.kill(i)
	}
	for i := range h.procs {
		h.start(i)
	}
	h.waitReady()
	h.leader()
	have := h.tokenIDs()
	for _, id := range acked {
		if !have[id] {
			t.Fatalf("acknowledged token %s lost across a full SIGKILL restart (have %v)", id, have)
		}
	}
	// The CLI reports errors on stderr with a non-zero exit.
	if _, err := run(t, "clusters", "remove", "nosuch", "--config", h.config()); err == nil {
		t.Fatal("removing an unknown cluster succeeded")
	}
	_, err := run(t, "trust", "federate", "--trust-domain", "spire.example", "--url", "http://127.0.0.1:1/b",
		"--profile", "https_web", "--config", h.config())
	if err == nil || !strings.Contains(err.Error(), "federation.url") {
		t.Fatalf("federating over plain http: %v, want an error naming federation.url", err)
	}
	// The hub's own trust domain is among the bundles only once a cluster
	// joins; with none, the list is empty but the call works.
	if _, err := run(t, "trust", "bundles", "-o", "json", "--config", h.config()); err != nil {
		t.Fatal(err)
	}
}
