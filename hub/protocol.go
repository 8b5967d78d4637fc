package hub

import (
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
// otherwise. The leader calls it before proposing.
func (s *Server) checkProtocol(t fsm.MessageType) error {
	need := s.minVersion(t)
	if need <= baseProtocol {
		return nil
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return status.Errorf(codes.Unavailable, "hub: raft configuration: %v; retry", err)
	}
	for _, srv := range f.Configuration().Servers {
		v := baseProtocol
		if srv.ID == raft.ServerID(s.cfg.Name) {
			v = s.protocolVersion()
		} else if m, ok := s.members.get(string(srv.ID)); ok && m.Meta.Version > 0 {
			v = m.Meta.Version
		}
		if v < need {
			return status.Errorf(codes.FailedPrecondition,
				"hub: %s needs hub protocol version %d, but server %s applies version %d; upgrade every server first", t, need, srv.ID, v)
		}
	}
	return nil
}
