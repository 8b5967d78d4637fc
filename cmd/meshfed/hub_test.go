package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/hub"
)

func TestHubCertTTLFlags(t *testing.T) {
	var got hub.Config
	d := newTestDeps(t, nil)
	d.runHub = func(_ context.Context, cfg hub.Config, _ *slog.Logger) error {
		got = cfg
		return nil
	}
	r := run(t, d, "hub", "--name", "h1", "--data-dir", t.TempDir(), "--bootstrap-expect", "1",
		"--server-cert-ttl", "30s", "--agent-cert-ttl", "36h")
	if r.code != 0 || got.ServerCertTTL != 30*time.Second || got.AgentCertTTL != 36*time.Hour {
		t.Fatalf("exit %d, server %v, agent %v; want 0, 30s, 36h", r.code, got.ServerCertTTL, got.AgentCertTTL)
	}
	r = run(t, d, "hub", "--name", "h1", "--data-dir", t.TempDir(), "--bootstrap-expect", "1", "--server-cert-ttl", "29s", "--agent-cert-ttl", "9000h")
	if r.code != exitUsage {
		t.Fatalf("exit %d, want %d", r.code, exitUsage)
	}
	for _, want := range []string{"server_cert_ttl: 29s must be in 30s..8760h0m0s", "agent_cert_ttl: 9000h0m0s must be in 30s..8760h0m0s"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q, want %q", r.stderr, want)
		}
	}
}
