package hub

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// A leader killed while it holds writes nobody else has comes back as a
// follower and truncates its log tail. raft-wal before v0.4.1 marked the
// truncated segment sealed without writing its index, and every later start
// panicked in raft.NewRaft ("sealed segment has no index block"). The
// server must come back from that, every time.
func TestServerWithTruncatedLogTailRestarts(t *testing.T) {
	const maxKills = 10
	h := startProcHub(t, 3)

	// Writers keep the leader busy so that it always has entries in flight.
	var writes atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 12 {
		admin := h.admin(w % 3)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := admin.PutPolicy(ctx, &fedv1.PutPolicyRequest{Policy: testPolicy(fmt.Sprintf("p%d", w), fmt.Sprintf("r%d", n))})
				cancel()
				if err == nil {
					writes.Add(1)
				}
			}
		}()
	}
	stopWriters := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopWriters()

	truncated := -1
	for kill := 1; kill <= maxKills && truncated < 0; kill++ {
		l := h.leader(20 * time.Second)
		srv := h.servers[l]
		// Writes must be flowing through this leader when it dies.
		base := writes.Load()
		waitFor(t, 20*time.Second, "writes through leader "+srv.name, func() error {
			if n := writes.Load() - base; n < 30 {
				return fmt.Errorf("%d writes", n)
			}
			return nil
		})
		srv.kill()
		h.leader(20*time.Second, l)
		off := srv.logSize()
		if err := srv.start(30 * time.Second); err != nil {
			t.Fatalf("kill %d: restart after SIGKILL: %v", kill, err)
		}
		if strings.Contains(srv.logSince(off), "clearing log suffix") {
			truncated = l
			t.Logf("kill %d: %s truncated its log tail on return", kill, srv.name)
		}
	}
	if truncated < 0 {
		t.Fatalf("no killed leader truncated its log tail in %d kills under writes (no \"clearing log suffix\" in its log): the test did not reach the condition it checks", maxKills)
	}
	stopWriters()

	// The restart that used to panic: a graceful stop, then a start.
	srv := h.servers[truncated]
	if err := srv.stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := srv.start(30 * time.Second); err != nil {
		t.Fatalf("restart after the log tail was truncated: %v", err)
	}
	waitFor(t, 20*time.Second, srv.name+" a voter at the leader's commit index", func() error {
		own, err := h.status(truncated)
		if err != nil {
			return err
		}
		l := h.leader(10 * time.Second)
		lead, err := h.status(l)
		if err != nil {
			return err
		}
		mine, seenByLeader := serverStatus(own, srv.name), serverStatus(lead, srv.name)
		switch {
		case mine.GetState() != "follower":
			return fmt.Errorf("%s says its state is %q", srv.name, mine.GetState())
		case seenByLeader.GetSuffrage() != "voter" || seenByLeader.GetHealth() != "alive":
			return fmt.Errorf("leader %s sees %s as %v", lead.GetAnsweredBy(), srv.name, seenByLeader)
		case own.GetCommitIndex() != lead.GetCommitIndex():
			return fmt.Errorf("commit index %d, leader %s %d", own.GetCommitIndex(), lead.GetAnsweredBy(), lead.GetCommitIndex())
		case own.GetRevision() != lead.GetRevision():
			return fmt.Errorf("revision %d, leader %s %d", own.GetRevision(), lead.GetAnsweredBy(), lead.GetRevision())
		}
		return nil
	})
}

func serverStatus(st *fedv1.StatusResponse, name string) *fedv1.ServerStatus {
	for _, s := range st.GetServers() {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}
