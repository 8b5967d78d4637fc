package hub

import (
	"math"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/hub/fsm"
)

// Rolling upgrades. Each server gossips the command protocol it applies
// (serverMeta.Version, fsm.ProtocolVersion). The leader proposes a command
// only when every server in the Raft configuration applies its type
// (fsm.MessageType.MinVersion): an older server that met a command it does
// not know would stop (the FSM panics rather than skip it). So a new
// command type becomes usable once the last server is upgraded, and until
// then is refused with FailedPrecondition naming the server to upgrade.

// protocolOverride lets tests play servers of other versions.
type protocolOverride struct {
	// advertise replaces fsm.ProtocolVersion in gossip (0: no override).
	advertise int
	// require replaces fsm.MessageType.MinVersion for some types.
	require map[fsm.MessageType]int
}

// protocolVersion is the version this server gossips.
func (s *Server) protocolVersion() int {
	if v := s.cfg.protocol.advertise; v != 0 {
		return v
	}
	return fsm.ProtocolVersion
}

func (s *Server) minVersion(t fsm.MessageType) int {
	if v, ok := s.cfg.protocol.require[t&^fsm.IgnoreUnknownFlag]; ok {
		return v
	}
	return t.MinVersion()
}

// baseProtocol is the version every hub server that ever gossiped one
// applies; a server gossip does not know (yet) is taken to be at it.
const baseProtocol = 1

// checkProtocol is nil if every server in the Raft configuration applies
// commands of type t, and FailedPrecondition naming one that does not
// otherwise. The leader calls it before proposing, and every server before
// it wraps a write in a Request, so it is on every write's path: the
// lowest version in the configuration is looked up at most once per
// protocolFloorTTL (protocolFloor).
func (s *Server) checkProtocol(t fsm.MessageType) error {
	need := s.minVersion(t)
	if need <= baseProtocol {
		return nil
	}
	floor, who, err := s.protoFloor.get(s.lowestProtocol)
	if err != nil {
		return err
	}
	if floor < need {
		return status.Errorf(codes.FailedPrecondition,
			"hub: %s needs hub protocol version %d, but server %s applies version %d; upgrade every server first", t, need, who, floor)
	}
	return nil
}

// lowestProtocol returns the lowest protocol version among the servers of
// the Raft configuration, and the first server at it.
func (s *Server) lowestProtocol() (int, raft.ServerID, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return 0, "", status.Errorf(codes.Unavailable, "hub: raft configuration: %v; retry", err)
	}
	floor, who := math.MaxInt, raft.ServerID("")
	for _, srv := range f.Configuration().Servers {
		v := baseProtocol
		if srv.ID == raft.ServerID(s.cfg.Name) {
			v = s.protocolVersion()
		} else if m, ok := s.members.get(string(srv.ID)); ok && m.Meta.Version > 0 {
			v = m.Meta.Version
		}
		if v < floor {
			floor, who = v, srv.ID
		}
	}
	if who == "" {
		return 0, "", status.Error(codes.Unavailable, "hub: empty raft configuration; retry")
	}
	return floor, who, nil
}

// protocolFloorTTL bounds how stale protocolFloor's answer may be. Asking
// Raft for its configuration is a round trip through its main loop, which
// on every write cost the leader more than half its throughput with 16
// writers. A server added or upgraded meanwhile is seen up to this late: a
// new command type becomes usable a second after the last upgrade, and a
// server added with an older build may meet a newer command (it would
// anyway: see "Known limitations").
const protocolFloorTTL = time.Second

// protocolFloor caches lowestProtocol.
type protocolFloor struct {
	mu    sync.Mutex
	until time.Time
	floor int
	who   raft.ServerID
}

func (p *protocolFloor) get(lookup func() (int, raft.ServerID, error)) (int, raft.ServerID, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now := time.Now(); now.Before(p.until) {
		return p.floor, p.who, nil
	}
	floor, who, err := lookup()
	if err != nil {
		return 0, "", err
	}
	p.floor, p.who, p.until = floor, who, time.Now().Add(protocolFloorTTL)
	return floor, who, nil
}
