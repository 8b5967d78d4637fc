package hub

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/pki"
)

// spireServerBinary finds spire-server as scripts/spire-bin.sh builds it
// (make spire-bin; make test depends on it).
func spireServerBinary(t *testing.T) string {
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

type spireServer struct {
	t      *testing.T
	bin    string
	dir    string
	socket string
	cmd    *exec.Cmd
	done   chan struct{}
	log    *bytes.Buffer
	// bundleURL is its own bundle endpoint (https_spiffe, spiffe://<td>/spire/server).
	bundleURL string
}

// startSPIRE runs a real spire-server for trust domain td; federation is the
// HCL of its federates_with blocks.
func startSPIRE(t *testing.T, td, federation string) *spireServer {
	t.Helper()
	dir := t.TempDir()
	ports := freePorts(t, 2)
	s := &spireServer{t: t, bin: spireServerBinary(t), dir: dir, socket: filepath.Join(dir, "api.sock"), log: &bytes.Buffer{}}
	s.bundleURL = fmt.Sprintf("https://127.0.0.1:%d", ports[1])
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
	waitFor(t, 60*time.Second, "spire-server healthy", func() error {
		select {
		case <-s.done:
			t.Fatalf("spire-server exited: %v\n%s", s.cmd.ProcessState, s.log.String())
		default:
		}
		_, err := s.run("healthcheck")
		return err
	})
	return s
}

func (s *spireServer) run(args ...string) ([]byte, error) {
	args = append(args, "-socketPath", s.socket)
	out, err := exec.Command(s.bin, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("spire-server %v: %w: %s", args, err, out)
	}
	return out, nil
}

func pemCerts(t *testing.T, certs ...*x509.Certificate) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// TestSPIREInterop federates meshfed with a real SPIRE server in both
// directions: the hub consumes SPIRE's bundle from its bundle endpoint, and
// SPIRE consumes a member cluster's bundle from the hub's.
func TestSPIREInterop(t *testing.T) {
	var bundlePort int
	h := newTestHub(t, 1, func(c *Config) {
		bundlePort = freePorts(t, 1)[0]
		c.BundlePort = bundlePort
	})
	admin := h.Admin()
	joinCluster(t, admin, "east")
	east, err := bundleFor(t, admin, "east.meshfed.local")
	if err != nil {
		t.Fatal(err)
	}
	hubCA, _, _ := h.Server(0).certs.current()

	spire := startSPIRE(t, "spire.example", "")

	t.Run("hub consumes SPIRE's bundle", func(t *testing.T) {
		out, err := spire.run("bundle", "show", "-format", "pem")
		if err != nil {
			t.Fatal(err)
		}
		roots, err := pki.ParseCertsPEM(out)
		if err != nil {
			t.Fatal(err)
		}
		rel := &fedv1.FederationRelationship{
			TrustDomain: "spire.example", Url: spire.bundleURL, Profile: ProfileHTTPSSPIFFE,
			EndpointSpiffeId: "spiffe://spire.example/spire/server",
		}
		for _, r := range roots {
			rel.EndpointBootstrapAuthorities = append(rel.EndpointBootstrapAuthorities, r.Raw)
		}
		if _, err := admin.PutFederation(ctxT(t, 10*time.Second), &fedv1.PutFederationRequest{Federation: rel}); err != nil {
			t.Fatal(err)
		}
		var got *fedv1.BundleInfo
		waitFor(t, 30*time.Second, "SPIRE's bundle at the hub", func() error {
			got, err = bundleFor(t, admin, "spire.example")
			if err != nil {
				return fmt.Errorf("%v (fetch status: %s)", err, fetchStatusOf(t, admin, "spire.example"))
			}
			return nil
		})
		if !mustCert(t, got.GetBundle().GetX509Authorities()[0]).Equal(roots[0]) {
			t.Fatal("the hub stored a different root than SPIRE's")
		}
	})

	t.Run("SPIRE consumes a cluster's bundle from the hub", func(t *testing.T) {
		// SPIRE authenticates the hub's endpoint by its SPIFFE ID, so it
		// needs the hub's trust domain bundle first.
		hubPEM := filepath.Join(spire.dir, "hub.pem")
		if err := os.WriteFile(hubPEM, pemCerts(t, hubCA.Cert), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := spire.run("bundle", "set", "-format", "pem", "-id", "spiffe://hub.meshfed", "-path", hubPEM); err != nil {
			t.Fatal(err)
		}
		if _, err := spire.run("federation", "create", "-trustDomain", "east.meshfed.local",
			"-bundleEndpointURL", fmt.Sprintf("https://127.0.0.1:%d/east.meshfed.local", bundlePort),
			"-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", "spiffe://hub.meshfed/server/s0"); err != nil {
			t.Fatal(err)
		}
		if _, err := spire.run("federation", "refresh", "-id", "east.meshfed.local"); err != nil {
			t.Fatal(err)
		}
		want := pemCerts(t, mustCert(t, east.GetBundle().GetX509Authorities()[0]))
		waitFor(t, 60*time.Second, "east's bundle in SPIRE", func() error {
			out, err := spire.run("bundle", "list", "-format", "pem", "-id", "spiffe://east.meshfed.local")
			if err != nil {
				return err
			}
			if !bytes.Contains(out, bytes.TrimSpace(want)) {
				return fmt.Errorf("SPIRE has %q", strings.TrimSpace(string(out)))
			}
			return nil
		})
	})
}
