// Package spiretest runs a real spire-server (built by `make spire-bin`)
// for tests: the hub's federation interop test and the gateway's test that
// an external trust domain's SVIDs are not a member's gateway. Test code
// only.
package spiretest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/wait"
)

// Binary finds spire-server as scripts/spire-bin.sh builds it
// ($MESHFED_SPIRE_SERVER overrides), failing the test if it is missing.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("MESHFED_SPIRE_SERVER"); p != "" {
		return p
	}
	cache := os.Getenv("MESHFED_TESTENV_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "meshfed", "testenv")
	}
	p := filepath.Join(cache, "spire-v1.13.3", "spire-server")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("spire-server not built: run `make spire-bin` (or set MESHFED_SPIRE_SERVER): %v", err)
	}
	return p
}

// Server is a running spire-server.
type Server struct {
	t      testing.TB
	bin    string
	dir    string
	socket string
	cmd    *exec.Cmd
	done   chan struct{}
	log    *bytes.Buffer
	// BundleURL is its own bundle endpoint (https_spiffe,
	// spiffe://<td>/spire/server).
	BundleURL string
}

// Dir is the server's folder (its config, data and anything a test
// writes next to them).
func (s *Server) Dir() string { return s.dir }

// Start runs a spire-server for trust domain td until the test ends;
// federation is the HCL of its federates_with blocks.
func Start(t testing.TB, td, federation string) *Server {
	t.Helper()
	dir := t.TempDir()
	ports := freePorts(t, 2)
	s := &Server{t: t, bin: Binary(t), dir: dir, socket: filepath.Join(dir, "api.sock"), log: &bytes.Buffer{}}
	s.BundleURL = fmt.Sprintf("https://127.0.0.1:%d", ports[1])
	conf := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "DEBUG"
  federation {
    bundle_endpoint {
      address = "127.0.0.1"
      port = %d
    }
%s
  }
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
}
`, ports[0], s.socket, td, filepath.Join(dir, "data"), ports[1], federation, filepath.Join(dir, "data", "datastore.sqlite3"))
	path := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(s.bin, "run", "-config", path)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.done = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		if t.Failed() {
			t.Logf("spire-server log:\n%s", s.log.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := wait.Poll(ctx, wait.Backoff{Min: 50 * time.Millisecond, Max: time.Second}, "spire-server healthy", func(context.Context) error {
		select {
		case <-s.done:
			return wait.Permanent(fmt.Errorf("spire-server exited: %v\n%s", s.cmd.ProcessState, s.log.String()))
		default:
		}
		_, err := s.Run("healthcheck")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

// Run runs a spire-server CLI command against the server's API socket.
func (s *Server) Run(args ...string) ([]byte, error) {
	args = append(args, "-socketPath", s.socket)
	out, err := exec.Command(s.bin, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("spire-server %v: %w: %s", args, err, out)
	}
	return out, nil
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return ports
}
