package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// Safe bootstrap. A fresh server started with --bootstrap-expect N
// bootstraps Raft only when all of this holds:
//
//   - it has no Raft state of its own;
//   - it sees at least N alive servers declaring the same N, and it has
//     the lowest name among them (one proposer, not N);
//   - every alive server it sees answers a bootstrap query over gossip,
//     none has Raft state or knows a leader, and each promises not to
//     bootstrap, nor to promise anyone else, for bootstrapPromiseTTL.
//
// If any peer has Raft state or knows a leader, the server never
// bootstraps: the hub exists, and its leader adds the server (autopilot).
// The promises close the race of two servers that each think they are the
// lowest (their gossip views still differ): a server that promised one
// refuses the other, so at most one configuration is ever written at Raft
// index 1. Consul's maybeBootstrap asks its peers the same question over
// RPC; there is no server-to-server gRPC before the hub CA exists, so here
// it travels as memberlist user messages, authenticated and encrypted with
// the gossip key like the rest of gossip.

const (
	bootstrapQueryTimeout = 2 * time.Second
	bootstrapPromiseTTL   = 10 * time.Second
)

// Gossip user message kinds: the first byte, then JSON.
const (
	msgBootstrapQuery   byte = 1
	msgBootstrapReply   byte = 2
	msgBootstrapRelease byte = 3
)

// bootstrapQuery asks for a reply and a promise; a release (same shape)
// gives the promise back after a failed attempt.
type bootstrapQuery struct {
	From string `json:"from"`
	// Addr is the asker's gossip address: the reply goes there, whether or
	// not the peer has learnt of the asker through gossip yet.
	Addr  string `json:"addr"`
	Nonce uint64 `json:"nonce"`
}

type bootstrapReply struct {
	From  string `json:"from"`
	Nonce uint64 `json:"nonce"`
	// HasState: the server has a Raft log, snapshot or configuration.
	HasState bool `json:"state"`
	// Leader is the leader the server knows, if any.
	Leader string `json:"leader,omitempty"`
	// Granted: the server promised the asker not to bootstrap itself,
	// nor to promise another server, for bootstrapPromiseTTL.
	Granted bool `json:"granted"`
}

// bootstrapper holds this server's side of the protocol.
type bootstrapper struct {
	mu sync.Mutex
	// promisedTo is who this server promised, until promiseUntil; itself
	// while it proposes.
	promisedTo   string
	promiseNonce uint64 // of the attempt promised to
	promiseUntil time.Time
	// disabled: a peer had Raft state or knew a leader, or this server
	// bootstrapped. Never bootstrap again.
	disabled bool
	waiting  map[uint64]chan bootstrapReply
	nonce    uint64
}

func newBootstrapper() *bootstrapper {
	return &bootstrapper{waiting: map[uint64]chan bootstrapReply{}, nonce: rand.Uint64()}
}

// promise records a promise to attempt nonce of name unless one to
// another server holds.
func (b *bootstrapper) promise(name string, nonce uint64, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.promisedTo != "" && b.promisedTo != name && now.Before(b.promiseUntil) {
		return false
	}
	b.promisedTo, b.promiseNonce, b.promiseUntil = name, nonce, now.Add(bootstrapPromiseTTL)
	return true
}

// release gives back the promise to attempt nonce of name; a late release
// of an earlier attempt leaves a later one's promise alone.
func (b *bootstrapper) release(name string, nonce uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.promisedTo == name && b.promiseNonce == nonce {
		b.promisedTo = ""
	}
}

func (b *bootstrapper) nextNonce() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nonce++
	return b.nonce
}

func (b *bootstrapper) isDisabled() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.disabled
}

func (b *bootstrapper) disable() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.disabled = true
}

// hasRaftState reports whether this server has ever been part of a hub.
func (s *Server) hasRaftState() bool {
	return s.raft.LastIndex() > 0
}

// maybeBootstrap runs on the reconcile loop of a server that has
// BootstrapExpect set.
func (s *Server) maybeBootstrap() {
	if s.cfg.BootstrapExpect == 0 || s.boot.isDisabled() {
		return
	}
	if s.hasRaftState() {
		s.boot.disable()
		return
	}
	var voters []raft.Server
	for _, m := range s.members.snapshot() {
		if m.Health != "alive" || m.Meta.BootstrapExpect == 0 {
			continue
		}
		if m.Meta.BootstrapExpect != s.cfg.BootstrapExpect {
			s.log.Error("servers disagree on bootstrap_expect; not bootstrapping", "peer", m.Name, "peer_expect", m.Meta.BootstrapExpect, "expect", s.cfg.BootstrapExpect)
			return
		}
		voters = append(voters, raft.Server{ID: raft.ServerID(m.Name), Address: raft.ServerAddress(m.Meta.Raft), Suffrage: raft.Voter})
	}
	if len(voters) < s.cfg.BootstrapExpect || string(voters[0].ID) != s.cfg.Name {
		return // not enough servers yet, or the lowest name proposes
	}
	nonce := s.boot.nextNonce()
	if !s.boot.promise(s.cfg.Name, nonce, time.Now()) {
		return // promised another proposer
	}
	defer s.boot.release(s.cfg.Name, nonce)
	ctx, cancel := context.WithTimeout(context.Background(), bootstrapQueryTimeout)
	defer cancel()
	replies, err := s.queryPeers(ctx, nonce)
	bootstrapped := false
	defer func() {
		if !bootstrapped { // give back the promises of a failed attempt
			s.releasePeers(replies, nonce)
		}
	}()
	if err != nil {
		s.log.Info("not bootstrapping yet", "reason", err)
		return
	}
	for _, r := range replies {
		if r.HasState || r.Leader != "" {
			s.log.Info("a peer is already part of a hub; not bootstrapping, waiting for its leader to add this server", "peer", r.From, "leader", r.Leader)
			s.boot.disable()
			return
		}
	}
	for _, r := range replies {
		if !r.Granted {
			s.log.Info("not bootstrapping yet: a peer promised another server", "peer", r.From)
			return
		}
	}
	if s.hasRaftState() { // a leader reached us while we asked
		s.boot.disable()
		return
	}
	err = s.raft.BootstrapCluster(raft.Configuration{Servers: voters}).Error()
	s.boot.disable()
	bootstrapped = true
	switch {
	case err == nil:
		s.log.Info("bootstrapped raft", "servers", len(voters), "peers_asked", len(replies))
	case errors.Is(err, raft.ErrCantBootstrap):
		// A leader reached us first.
	default:
		s.log.Error("bootstrap", "err", err)
	}
}

// queryPeers asks every other alive gossip member for its Raft state and a
// promise, and waits for all of them to answer. With an error it still
// returns the replies it got, so that their promises can be released.
func (s *Server) queryPeers(ctx context.Context, nonce uint64) ([]bootstrapReply, error) {
	var peers []*memberlist.Node
	for _, n := range s.gossip.Members() {
		if n.Name != s.cfg.Name {
			peers = append(peers, n)
		}
	}
	ch := make(chan bootstrapReply, len(peers))
	s.boot.mu.Lock()
	s.boot.waiting[nonce] = ch
	s.boot.mu.Unlock()
	defer func() {
		s.boot.mu.Lock()
		delete(s.boot.waiting, nonce)
		s.boot.mu.Unlock()
	}()
	msg, err := encodeGossipMsg(msgBootstrapQuery, s.bootstrapQuery(nonce))
	if err != nil {
		return nil, err
	}
	for _, n := range peers {
		if err := s.gossip.SendReliable(n, msg); err != nil {
			return nil, fmt.Errorf("ask %s: %w", n.Name, err)
		}
	}
	got := map[string]bootstrapReply{}
	collected := func() []bootstrapReply {
		out := make([]bootstrapReply, 0, len(got))
		for _, r := range got {
			out = append(out, r)
		}
		return out
	}
	for len(got) < len(peers) {
		select {
		case r := <-ch:
			got[r.From] = r
		case <-ctx.Done():
			for _, n := range peers {
				if _, ok := got[n.Name]; !ok {
					return collected(), fmt.Errorf("%s did not answer the bootstrap query", n.Name)
				}
			}
		case <-s.stopCh:
			return collected(), errors.New("shutting down")
		}
	}
	return collected(), nil
}

func (s *Server) bootstrapQuery(nonce uint64) bootstrapQuery {
	return bootstrapQuery{From: s.cfg.Name, Addr: s.addrOf(s.cfg.GossipPort), Nonce: nonce}
}

// addrOf is the advertised host:port of one of this server's ports.
func (s *Server) addrOf(port int) string {
	return net.JoinHostPort(s.advertiseIP(), strconv.Itoa(port))
}

// releasePeers gives back the promises in replies.
func (s *Server) releasePeers(replies []bootstrapReply, nonce uint64) {
	msg, err := encodeGossipMsg(msgBootstrapRelease, s.bootstrapQuery(nonce))
	if err != nil {
		return
	}
	for _, r := range replies {
		if !r.Granted {
			continue
		}
		for _, n := range s.gossip.Members() {
			if n.Name == r.From {
				if err := s.gossip.SendReliable(n, msg); err != nil {
					s.log.Debug("release bootstrap promise", "peer", r.From, "err", err) // it lapses
				}
			}
		}
	}
}

// sendTo sends a user message to a gossip address.
func (s *Server) sendTo(name, addr string, msg []byte) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return fmt.Errorf("%q is not an IP address", host)
	}
	return s.gossip.SendReliable(&memberlist.Node{Name: name, Addr: ip, Port: uint16(p)}, msg)
}

func encodeGossipMsg(kind byte, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append([]byte{kind}, b...), nil
}

// handleGossipMsg serves one user message; it runs on its own goroutine,
// not memberlist's receive loop.
func (s *Server) handleGossipMsg(msg []byte) {
	if len(msg) == 0 {
		return
	}
	switch msg[0] {
	case msgBootstrapQuery:
		var q bootstrapQuery
		if err := json.Unmarshal(msg[1:], &q); err != nil {
			s.log.Warn("bad bootstrap query", "err", err)
			return
		}
		_, leader := s.raft.LeaderWithID()
		r := bootstrapReply{From: s.cfg.Name, Nonce: q.Nonce, HasState: s.hasRaftState(), Leader: string(leader)}
		r.Granted = !r.HasState && r.Leader == "" && s.boot.promise(q.From, q.Nonce, time.Now())
		out, err := encodeGossipMsg(msgBootstrapReply, r)
		if err != nil {
			return
		}
		if err := s.sendTo(q.From, q.Addr, out); err != nil {
			s.log.Debug("answer bootstrap query", "peer", q.From, "err", err)
		}
	case msgBootstrapRelease:
		var q bootstrapQuery
		if err := json.Unmarshal(msg[1:], &q); err != nil {
			s.log.Warn("bad bootstrap release", "err", err)
			return
		}
		s.boot.release(q.From, q.Nonce)
	case msgBootstrapReply:
		var r bootstrapReply
		if err := json.Unmarshal(msg[1:], &r); err != nil {
			s.log.Warn("bad bootstrap reply", "err", err)
			return
		}
		s.boot.mu.Lock()
		ch := s.boot.waiting[r.Nonce]
		s.boot.mu.Unlock()
		if ch != nil {
			select {
			case ch <- r:
			default:
			}
		}
	}
}
