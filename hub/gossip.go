package hub

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// deadNodeReclaimTime is how long a failed server's gossip name stays
// bound to its old address.
const deadNodeReclaimTime = 5 * time.Second

// serverMeta is what each server gossips about itself. It only gains fields.
type serverMeta struct {
	// Version is the command protocol the server applies
	// (fsm.ProtocolVersion); see checkProtocol.
	Version         int    `json:"v"`
	Raft            string `json:"raft"`
	GRPC            string `json:"grpc"`
	BootstrapExpect int    `json:"expect"`
}

// member is a hub server as gossip sees it.
type member struct {
	Name string
	Meta serverMeta
	// Health is alive, suspect, dead or left.
	Health string
	Since  time.Time
}

// memberTracker records every server gossip has told us about, including
// dead and departed ones (memberlist forgets those).
type memberTracker struct {
	mu      sync.Mutex
	members map[string]*member
	changed chan struct{}
}

func newMemberTracker() *memberTracker {
	return &memberTracker{members: map[string]*member{}, changed: make(chan struct{}, 1)}
}

func (t *memberTracker) set(n *memberlist.Node, health string) {
	var meta serverMeta
	if err := json.Unmarshal(n.Meta, &meta); err != nil {
		return // not a meshfed hub server
	}
	t.mu.Lock()
	m, ok := t.members[n.Name]
	if !ok || m.Health != health || m.Meta != meta {
		t.members[n.Name] = &member{Name: n.Name, Meta: meta, Health: health, Since: time.Now()}
	}
	t.mu.Unlock()
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// snapshot returns copies, sorted by name.
func (t *memberTracker) snapshot() []member {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]member, 0, len(t.members))
	for _, m := range t.members {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (t *memberTracker) get(name string) (member, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m, ok := t.members[name]
	if !ok {
		return member{}, false
	}
	return *m, true
}

// ServerAddr implements raft.ServerAddressProvider: Raft reaches a peer by
// its server ID at the Raft address that peer gossips (the last one known,
// if it is down), not at the address in the Raft configuration, which a
// restart on a new IP (a rescheduled pod) makes stale. With an error Raft
// falls back to the configured address.
func (t *memberTracker) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	m, ok := t.get(string(id))
	if !ok || m.Meta.Raft == "" {
		return "", fmt.Errorf("hub: server %s not known to gossip", id)
	}
	return raft.ServerAddress(m.Meta.Raft), nil
}

var _ raft.ServerAddressProvider = (*memberTracker)(nil)

// memberlist delegates.
func (t *memberTracker) NotifyJoin(n *memberlist.Node)   { t.set(n, "alive") }
func (t *memberTracker) NotifyUpdate(n *memberlist.Node) { t.set(n, "alive") }
func (t *memberTracker) NotifyLeave(n *memberlist.Node) {
	if n.State == memberlist.StateLeft {
		t.set(n, "left")
	} else {
		t.set(n, "dead")
	}
}

// gossipDelegate gives memberlist this server's metadata and hands user
// messages (the bootstrap queries) to a worker: NotifyMsg must not block.
type gossipDelegate struct {
	meta []byte
	msgs chan []byte
}

func (d gossipDelegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}

func (d gossipDelegate) NotifyMsg(b []byte) {
	select {
	case d.msgs <- append([]byte(nil), b...): // memberlist reuses b
	default: // a flood; the asker retries
	}
}
func (gossipDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (gossipDelegate) LocalState(bool) []byte          { return nil }
func (gossipDelegate) MergeRemoteState([]byte, bool)   {}

// gossipMsgLoop serves user messages until the server stops.
func (s *Server) gossipMsgLoop() {
	for {
		select {
		case <-s.stopCh:
			return
		case m := <-s.gossipMsgs:
			s.handleGossipMsg(m)
		}
	}
}

func (s *Server) setupGossip() error {
	var mc *memberlist.Config
	if s.cfg.GossipProfile == "local" {
		mc = memberlist.DefaultLocalConfig()
	} else {
		mc = memberlist.DefaultLANConfig()
	}
	mc.Name = s.cfg.Name
	mc.BindAddr = s.cfg.BindAddr
	mc.BindPort = s.cfg.GossipPort
	mc.AdvertiseAddr = s.advertiseIP()
	mc.AdvertisePort = s.cfg.GossipPort
	mc.LogOutput = logWriter{s.log, "memberlist"}
	// A server that comes back under its name at a new address (a new pod
	// IP) takes its name back once its old incarnation has been dead this
	// long; memberlist's default is never.
	mc.DeadNodeReclaimTime = deadNodeReclaimTime
	mc.Conflict = &reclaimer{s: s, pending: map[string]bool{}}
	if s.keys != nil {
		mc.SecretKey = s.keys.gossipKey
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	meta, err := json.Marshal(serverMeta{Version: s.protocolVersion(), Raft: string(s.transport.LocalAddr()), GRPC: s.GRPCAddr(), BootstrapExpect: s.cfg.BootstrapExpect})
	if err != nil {
		return err
	}
	s.gossipMsgs = make(chan []byte, 64)
	mc.Delegate = gossipDelegate{meta: meta, msgs: s.gossipMsgs}
	mc.Events = s.members
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("hub: gossip: %w", err)
	}
	s.gossip = ml
	return nil
}

// reclaimer pulls a server that came back at a new address into the pool
// once its old incarnation may be replaced. memberlist refuses the new
// address until the old one has been dead for deadNodeReclaimTime, and
// would only hear of it again at the next push/pull (15-30 s); joining the
// new address then exchanges state at once.
type reclaimer struct {
	s       *Server
	mu      sync.Mutex
	pending map[string]bool
}

// NotifyConflict implements memberlist.ConflictDelegate. memberlist calls
// it holding its node lock: the join runs later, on its own goroutine.
func (r *reclaimer) NotifyConflict(existing, other *memberlist.Node) {
	// (memberlist does not keep Node.State up to date; the tracker knows.)
	if m, _ := r.s.members.get(other.Name); m.Health == "alive" {
		r.s.log.Error("two servers use one name at different addresses", "name", other.Name, "addr", existing.Address(), "other_addr", other.Address())
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending[other.Name] {
		return
	}
	r.pending[other.Name] = true
	addr := other.Address()
	time.AfterFunc(deadNodeReclaimTime+time.Second, func() {
		r.mu.Lock()
		delete(r.pending, other.Name)
		r.mu.Unlock()
		select {
		case <-r.s.stopCh:
			return
		default:
		}
		if _, err := r.s.gossip.Join([]string{addr}); err != nil {
			r.s.log.Debug("join a server back at its new address", "peer", other.Name, "addr", addr, "err", err)
		}
	})
}

var _ memberlist.ConflictDelegate = (*reclaimer)(nil)

// joinLoop joins the configured addresses, retrying with backoff and jitter
// until at least one answers.
func (s *Server) joinLoop() {
	if len(s.cfg.Join) == 0 {
		return
	}
	backoff := 200 * time.Millisecond
	for {
		n, err := s.gossip.Join(s.cfg.Join)
		// Reaching only ourselves (every server may list every other, and
		// itself) is not joining: keep trying until someone else answers.
		if n > 0 && s.gossip.NumMembers() > 1 {
			s.log.Info("joined gossip pool", "contacted", n, "members", s.gossip.NumMembers())
			return
		}
		s.log.Debug("gossip join failed; retrying", "err", err, "in", backoff)
		select {
		case <-s.stopCh:
			return
		case <-time.After(backoff + rand.N(backoff/2)):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// reconcileLoop bootstraps Raft once BootstrapExpect servers are visible and,
// on the leader, keeps the Raft configuration in line with gossip: it adds
// live servers and removes departed or long-dead ones (autopilot).
func (s *Server) reconcileLoop() {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.stopCh:
			return
		case <-s.members.changed:
		case <-tick.C:
		}
		s.maybeBootstrap()
		if s.raft.State() == raft.Leader {
			s.reconcileMembers()
		}
	}
}

func (s *Server) reconcileMembers() {
	future := s.raft.GetConfiguration()
	if err := future.Error(); err != nil {
		return
	}
	cfg := future.Configuration()
	inRaft := map[raft.ServerID]raft.Server{}
	voters := 0
	for _, srv := range cfg.Servers {
		inRaft[srv.ID] = srv
		if srv.Suffrage == raft.Voter {
			voters++
		}
	}
	members := s.members.snapshot()
	byName := map[string]member{}
	for _, m := range members {
		byName[m.Name] = m
		if m.Health != "alive" {
			continue
		}
		cur, ok := inRaft[raft.ServerID(m.Name)]
		if ok && string(cur.Address) == m.Meta.Raft {
			continue
		}
		if len(inRaft) >= MaxServers && !ok {
			s.log.Warn("not adding server: at most servers", "peer", m.Name, "max", MaxServers)
			continue
		}
		s.log.Info("adding raft voter", "peer", m.Name, "addr", m.Meta.Raft)
		if err := s.raft.AddVoter(raft.ServerID(m.Name), raft.ServerAddress(m.Meta.Raft), 0, s.cfg.ApplyTimeout).Error(); err != nil {
			s.log.Warn("add voter", "peer", m.Name, "err", err)
		}
		return // one configuration change at a time
	}
	// Remove departed servers, and dead ones after the grace period, while a
	// majority of the current voters is healthy.
	healthy := 0
	var remove []raft.ServerID
	for _, srv := range cfg.Servers {
		m, ok := byName[string(srv.ID)]
		switch {
		case srv.ID == raft.ServerID(s.cfg.Name) || !ok || m.Health == "alive" || m.Health == "suspect":
			if srv.Suffrage == raft.Voter {
				healthy++
			}
		case m.Health == "left" || time.Since(m.Since) > s.cfg.DeadServerGrace:
			remove = append(remove, srv.ID)
		}
	}
	if len(remove) == 0 || healthy <= voters/2 {
		return
	}
	id := remove[0]
	s.log.Info("removing departed raft server", "peer", id, "health", byName[string(id)].Health)
	if err := s.raft.RemoveServer(id, 0, s.cfg.ApplyTimeout).Error(); err != nil {
		s.log.Warn("remove server", "peer", id, "err", err)
	}
}
