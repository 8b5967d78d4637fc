package hub

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshfed/meshfed/agent"
	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// runFileAgent joins cluster with a token from admin and runs a real agent
// (file source, no exports) whose only hub address is addr.
func runFileAgent(t *testing.T, admin fedv1.AdminClient, cluster, addr string) *agent.Agent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := admin.CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := agent.DefaultConfig()
	cfg.Cluster = federation.MustClusterName(cluster)
	if cfg.Locality, err = federation.NewLocality("r1", "z1", ""); err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = dir
	cfg.Source = agent.SourceFile
	cfg.SourcePath = filepath.Join(dir, "catalog.yaml")
	if err := os.WriteFile(cfg.SourcePath, []byte("services: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.ReconnectMin = 20 * time.Millisecond
	cfg.ReconnectMax = 300 * time.Millisecond
	cfg.HubAddresses = []string{addr}
	cfg.Log = testLogger(t).With("agent", cluster)
	if err := agent.Join(ctx, cfg, tok.GetToken()); err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("agent %s: %v", cluster, err)
		}
	})
	return a
}

// With the leader frozen (SIGSTOP), an agent whose stream is on it stops
// reporting connected within its heartbeat bound (3 of the hub's 2 s
// intervals), not at some later keepalive, and reports connected again
// once the server is resumed (SIGCONT).
func TestAgentOfAFrozenLeaderReportsDisconnectedWithinTheBound(t *testing.T) {
	h := startProcHub(t, 3)
	leader := h.leader(30 * time.Second)
	a := runFileAgent(t, h.admin(leader), "east", h.servers[leader].grpcAddr())
	var bound time.Duration
	waitFor(t, 30*time.Second, "east connected", func() error {
		st := a.State().Hub
		if !st.Connected || st.HeartbeatBoundMs == 0 {
			return errors.New("not connected, or no heartbeat bound")
		}
		bound = time.Duration(st.HeartbeatBoundMs) * time.Millisecond
		return nil
	})
	if want := time.Duration(federation.HeartbeatMisses) * DefaultConfig().SyncHeartbeatInterval; bound != want {
		t.Fatalf("heartbeat bound %v, want %v", bound, want)
	}
	// Connected is steady while the leader runs: heartbeats keep it.
	heardAt := func() time.Time {
		return time.Now().Add(-time.Duration(a.State().Hub.LastHeardAgoMs) * time.Millisecond)
	}
	first := heardAt()
	waitFor(t, 2*bound, "a heartbeat", func() error {
		if !a.State().Hub.Connected || heardAt().Sub(first) < DefaultConfig().SyncHeartbeatInterval/2 {
			return errors.New("no heartbeat yet")
		}
		return nil
	})

	if err := h.servers[leader].pause(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	resumed := false
	defer func() {
		if !resumed {
			_ = h.servers[leader].resume()
		}
	}()
	waitFor(t, bound+10*time.Second, "east disconnected", func() error {
		if a.State().Hub.Connected {
			return errors.New("still connected")
		}
		return nil
	})
	took := time.Since(paused)
	t.Logf("connected=false %v after the leader froze (bound %v)", took, bound)
	if took > bound+time.Second {
		t.Errorf("connected=false only %v after the leader froze, want within the bound %v (+1s)", took, bound)
	}
	if err := h.servers[leader].resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	waitFor(t, 60*time.Second, "east connected again", func() error {
		if !a.State().Hub.Connected {
			return errors.New("not connected")
		}
		return nil
	})
}
