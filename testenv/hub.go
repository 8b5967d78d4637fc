package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Hub is a hub of real `meshfed hub` processes on loopback, started with
// --gossip-profile local and a shared encrypt key from `meshfed hub keygen`.
type Hub struct {
	binary  string
	key     string
	servers []*HubServer
}

// HubServer is one `meshfed hub` process. Its [Process] methods kill,
// restart, pause and resume it; a restarted server keeps its name, ports and
// data folder.
type HubServer struct {
	*Process
	name     string
	dataDir  string
	grpcPort int
	httpPort int
}

// ServerName is the server's --name (s0, s1, ...).
func (s *HubServer) ServerName() string { return s.name }

// GRPCAddr is the address of the server's gRPC API (agents, operators).
func (s *HubServer) GRPCAddr() string { return loopback(s.grpcPort) }

// HTTPAddr is the address of the server's /healthz, /readyz and /metrics.
func (s *HubServer) HTTPAddr() string { return loopback(s.httpPort) }

// DataDir is the server's --data-dir.
func (s *HubServer) DataDir() string { return s.dataDir }

// AdminConfig is the path of the admin.yaml the server writes into its data
// folder once it has a certificate; `meshfed --config` takes it.
func (s *HubServer) AdminConfig() string { return filepath.Join(s.dataDir, "admin.yaml") }

type hubSpec struct {
	dir          string
	servers      int
	binary       string
	readyTimeout time.Duration
}

// startHub starts spec.servers hub processes that bootstrap together and
// waits until every one answers /readyz. On error nothing is left running.
func startHub(ctx context.Context, s hubSpec) (*Hub, error) {
	keyOut, err := exec.CommandContext(ctx, s.binary, "hub", "keygen").Output()
	if err != nil {
		return nil, fmt.Errorf("testenv: meshfed hub keygen: %w", err)
	}
	h := &Hub{binary: s.binary, key: strings.TrimSpace(string(keyOut))}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		lastErr = h.tryStart(s, attempt)
		if lastErr == nil {
			return h, nil
		}
		h.Close()
		if !errors.Is(lastErr, errExited) {
			break
		}
	}
	return nil, lastErr
}

func (h *Hub) tryStart(s hubSpec, attempt int) error {
	ports, err := freePorts(4 * s.servers)
	if err != nil {
		return err
	}
	h.servers = nil
	root := filepath.Join(s.dir, "hub", strconv.Itoa(attempt))
	for i := 0; i < s.servers; i++ {
		name := "s" + strconv.Itoa(i)
		srv := &HubServer{
			name:     name,
			dataDir:  filepath.Join(root, name),
			grpcPort: ports[4*i],
			httpPort: ports[4*i+3],
		}
		args := []string{"hub",
			"--name", name,
			"--data-dir", srv.dataDir,
			"--bind", "127.0.0.1",
			"--grpc-port", strconv.Itoa(ports[4*i]),
			"--raft-port", strconv.Itoa(ports[4*i+1]),
			"--gossip-port", strconv.Itoa(ports[4*i+2]),
			"--http-port", strconv.Itoa(ports[4*i+3]),
			"--bootstrap-expect", strconv.Itoa(s.servers),
			"--gossip-profile", "local",
			"--encrypt-key", h.key,
			"--pprof", // for benchmarks: the live heap after a GC
		}
		// Every other server, so that a restarted server finds its way back.
		for j := 0; j < s.servers; j++ {
			if j != i {
				args = append(args, "--join", loopback(ports[4*j+2]))
			}
		}
		if err := os.MkdirAll(root, 0o700); err != nil {
			return err
		}
		srv.Process = newProcess(processSpec{
			name:         "hub/" + name,
			path:         h.binary,
			args:         args,
			logPath:      filepath.Join(root, name+".log"),
			ready:        hubReady(srv.HTTPAddr()),
			readyTimeout: s.readyTimeout,
		})
		h.servers = append(h.servers, srv)
	}
	// All first, then wait: no server is ready before the others exist.
	for _, srv := range h.servers {
		if err := srv.launch(); err != nil {
			return err
		}
	}
	for _, srv := range h.servers {
		if err := srv.waitReady(); err != nil {
			return err
		}
	}
	return nil
}

func hubReady(httpAddr string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		_, err := httpGet(ctx, http.DefaultClient, "http://"+httpAddr+"/readyz", "")
		return err
	}
}

// Servers returns the hub's servers in order (s0, s1, ...).
func (h *Hub) Servers() []*HubServer { return append([]*HubServer(nil), h.servers...) }

// Server returns server i (s<i>).
func (h *Hub) Server(i int) *HubServer { return h.servers[i] }

// EncryptKey is the servers' shared --encrypt-key.
func (h *Hub) EncryptKey() string { return h.key }

// Binary is the meshfed binary the hub runs.
func (h *Hub) Binary() string { return h.binary }

// GRPCAddrs returns the gRPC addresses of all servers, running or not.
func (h *Hub) GRPCAddrs() []string {
	var addrs []string
	for _, s := range h.servers {
		addrs = append(addrs, s.GRPCAddr())
	}
	return addrs
}

// WaitReady waits until every running server answers /readyz with 200.
func (h *Hub) WaitReady(ctx context.Context, timeout time.Duration) error {
	return WaitFor(ctx, timeout, func(ctx context.Context) error {
		for _, s := range h.servers {
			if !s.Running() {
				continue
			}
			if err := hubReady(s.HTTPAddr())(ctx); err != nil {
				return fmt.Errorf("%s: %w", s.Name(), err)
			}
		}
		return nil
	})
}

// AdminConfig returns the admin.yaml of a running server that has written
// one.
func (h *Hub) AdminConfig() (string, error) {
	for _, s := range h.servers {
		if !s.Running() {
			continue
		}
		if _, err := os.Stat(s.AdminConfig()); err == nil {
			return s.AdminConfig(), nil
		}
	}
	return "", errors.New("testenv: no running hub server has written admin.yaml")
}

// Command runs the meshfed CLI against the hub as its operator (with
// --config set to [Hub.AdminConfig]) and returns its standard output; a
// non-zero exit is an error that carries the standard error.
//
//	out, err := fed.Hub().Command(ctx, "token", "create", "--cluster", "west", "-o", "json")
func (h *Hub) Command(ctx context.Context, args ...string) ([]byte, error) {
	cfg, err := h.AdminConfig()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, h.binary, append(args, "--config", cfg)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("testenv: meshfed %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Processes returns the servers' processes.
func (h *Hub) Processes() []*Process {
	var ps []*Process
	for _, s := range h.servers {
		ps = append(ps, s.Process)
	}
	return ps
}

// Close kills every server.
func (h *Hub) Close() {
	for _, s := range h.servers {
		_ = s.Kill()
	}
}

// LiveHeap returns the server's Go heap held by live objects: it asks the
// server (started with --pprof) for a heap profile after a garbage
// collection (/debug/pprof/heap?gc=1&debug=1), twice, and reads the second
// one's HeapAlloc. Twice, because objects in sync.Pools (gRPC's message
// buffers) survive one collection in the pools' victim caches. RSS also
// counts garbage not yet collected and memory the runtime keeps.
func (s *HubServer) LiveHeap(ctx context.Context) (int64, error) {
	var n int64
	for range 2 {
		var err error
		if n, err = s.heapAlloc(ctx); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func (s *HubServer) heapAlloc(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.HTTPAddr()+"/debug/pprof/heap?gc=1&debug=1", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("testenv: %s: heap profile: %s (is --pprof set?)", s.name, resp.Status)
	}
	// The profile can be megabytes; the runtime's statistics are at its end.
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("testenv: %s: no HeapAlloc in the heap profile", s.name)
}
