package hub

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

const bootstrappedMsg = "bootstrapped raft"

// firstEntry is a server's Raft log entry at index 1: the bootstrap
// configuration. Two hubs that bootstrapped apart differ here, while Raft
// (same index, same term) takes them for the same entry.
func firstEntry(t *testing.T, s *Server) raft.Log {
	t.Helper()
	var l raft.Log
	if err := s.wal.GetLog(1, &l); err != nil {
		t.Fatalf("%s: log entry 1: %v", s.Name(), err)
	}
	return l
}

// assertOneHub checks that every running server has the same first entry,
// the same configuration of want voters, and the same leader.
func assertOneHub(t *testing.T, h *testHub, want int) {
	t.Helper()
	l := h.Server(h.Leader(30 * time.Second))
	first := firstEntry(t, l)
	waitFor(t, 30*time.Second, fmt.Sprintf("every server with the leader's configuration of %d voters", want), func() error {
		lv := voters(t, l)
		if len(lv) != want {
			return fmt.Errorf("leader %s has voters %v", l.Name(), lv)
		}
		for i := range h.cfgs {
			s := h.Server(i)
			if s == nil {
				continue
			}
			if v := voters(t, s); !slices.Equal(v, lv) {
				return fmt.Errorf("%s has voters %v, leader %s %v", s.Name(), v, l.Name(), lv)
			}
			if _, id := s.raft.LeaderWithID(); string(id) != l.Name() {
				return fmt.Errorf("%s follows %q, not %s", s.Name(), id, l.Name())
			}
		}
		return nil
	})
	for i := range h.cfgs {
		if s := h.Server(i); s != nil {
			if e := firstEntry(t, s); e.Term != first.Term || e.Type != first.Type || !bytes.Equal(e.Data, first.Data) {
				t.Errorf("%s's log entry 1 (term %d, %v) differs from leader %s's (term %d, %v): two bootstraps", s.Name(), e.Term, e.Type, l.Name(), first.Term, first.Type)
			}
		}
	}
	if got := h.Logged(bootstrappedMsg); len(got) != 1 {
		t.Errorf("servers that bootstrapped: %v, want exactly one", got)
	}
}

// Five servers started together with --bootstrap-expect 3, each joining a
// different one, form one hub: one bootstrap, one configuration of five
// voters, one leader. (They used to write different configurations at Raft
// index 1: each bootstrapped with the servers it happened to see.)
func TestFiveServersExpectingThreeFormOneHub(t *testing.T) {
	h := buildTestHub(t, 5, func(_ int, c *Config) { c.BootstrapExpect = 3 })
	for i := range h.cfgs { // a ring: s0 joins s1, ..., s4 joins s0
		h.cfgs[i].Join = []string{fmt.Sprintf("127.0.0.1:%d", h.cfgs[(i+1)%5].GossipPort)}
	}
	var wg sync.WaitGroup
	for i := range h.cfgs {
		wg.Add(1)
		go func() { defer wg.Done(); h.Start(i) }()
	}
	wg.Wait()
	h.WaitReady(60 * time.Second)
	assertOneHub(t, h, 5)
}

// A fresh server with --bootstrap-expect joining a running hub does not
// bootstrap a hub of its own: its peers have Raft state, so it waits for
// the leader to add it, and then serves the hub's data.
func TestFreshServerJoinsRunningHubWithoutBootstrapping(t *testing.T) {
	h := newTestHub(t, 3)
	ctx := ctxT(t, 30*time.Second)
	toks := createTokens(t, h.Admin(), "east", 2)
	i := h.AddWith("s3", func(c *Config) { c.BootstrapExpect = 3 })
	h.WaitReady(30 * time.Second)
	assertOneHub(t, h, 4)
	got, err := h.Admin(i).ListTokens(ctx, &fedv1.ListTokensRequest{})
	if err != nil || len(got.GetTokens()) != len(toks) {
		t.Fatalf("ListTokens through the new server: %v, %v; want %d tokens", got, err, len(toks))
	}
}

// A server that returns with an empty data directory (a replaced disk)
// does not bootstrap: it is added back and catches up from the leader.
func TestServerWithEmptyDataDirRejoins(t *testing.T) {
	h := newTestHub(t, 3)
	ctx := ctxT(t, 30*time.Second)
	h.AddWith("s3", func(c *Config) { c.BootstrapExpect = 3 }) // the hub outgrows its bootstrap configuration
	toks := createTokens(t, h.Admin(), "east", 2)
	assertOneHub(t, h, 4)
	h.Kill(2)
	if err := os.RemoveAll(h.cfgs[2].DataDir); err != nil {
		t.Fatal(err)
	}
	h.Start(2)
	h.WaitReady(30 * time.Second)
	assertOneHub(t, h, 4)
	waitFor(t, 20*time.Second, "the tokens through the emptied server", func() error {
		got, err := h.Admin(2).ListTokens(ctx, &fedv1.ListTokensRequest{})
		if err != nil {
			return err
		}
		if len(got.GetTokens()) != len(toks) {
			return fmt.Errorf("%d tokens, want %d", len(got.GetTokens()), len(toks))
		}
		return nil
	})
}

// The bootstrap query: a server with Raft state says so and promises
// nothing; a fresh one promises the first asker and refuses a second one
// until the promise lapses.
func TestBootstrapPromises(t *testing.T) {
	b := newBootstrapper()
	now := time.Now()
	if !b.promise("s0", 1, now) || !b.promise("s0", 2, now) {
		t.Fatal("a fresh server refused to promise s0 (two attempts)")
	}
	if b.promise("s1", 1, now.Add(bootstrapPromiseTTL/2)) {
		t.Fatal("promised s1 while its promise to s0 holds")
	}
	b.release("s0", 1) // late release of s0's first attempt
	if b.promise("s1", 1, now.Add(bootstrapPromiseTTL/2)) {
		t.Fatal("a late release of s0's first attempt gave back the promise to its second")
	}
	if !b.promise("s1", 1, now.Add(bootstrapPromiseTTL+time.Millisecond)) {
		t.Fatal("refused s1 after the promise to s0 lapsed")
	}
	b.release("s1", 1)
	if !b.promise("s2", 1, now.Add(bootstrapPromiseTTL+2*time.Millisecond)) {
		t.Fatal("refused s2 after s1 released its promise")
	}
}
