package agent

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshfed/meshfed/federation"
)

// The metrics server, which listens where Prometheus scrapes it, serves
// /metrics and nothing else: /state and /healthz stay on the loopback
// server.
func TestMetricsServerServesOnlyMetrics(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Cluster = federation.MustClusterName("east")
	cfg.DataDir = t.TempDir()
	cfg.Source = SourceFile
	cfg.SourcePath = filepath.Join(cfg.DataDir, "catalog.yaml")
	cfg.MetricsAddr = "127.0.0.1:0"
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.MetricsHandler())
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "meshfed_agent_hub_connected") {
		t.Fatalf("/metrics: %d %q", code, body)
	}
	for _, p := range []string{"/state", "/healthz", "/debug/pprof/"} {
		if code, _ := get(p); code != http.StatusNotFound {
			t.Errorf("%s on the metrics server: %d, want 404", p, code)
		}
	}
	cfg.MetricsAddr = "no-port"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "metrics_addr") {
		t.Errorf("metrics_addr without a port: %v", err)
	}
}
