package hub

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/hub/state"
	"github.com/meshfed/meshfed/internal/hubdial"
)

// errNoLeader is returned (as Unavailable) while there is no leader to serve a
// write or confirm a read.
var errNoLeader = status.Error(codes.Unavailable, "hub: no leader; retry")

// apply proposes a command and waits until it is committed and applied,
// forwarding it to the leader when this server is not. The returned index is
// the command's Raft index. An Unavailable error from a forwarded write means
// the outcome is unknown.
func (s *Server) apply(ctx context.Context, t fsm.MessageType, msg proto.Message) (uint64, error) {
	b, err := fsm.Encode(t, msg)
	if err != nil {
		return 0, status.Error(codes.Internal, err.Error())
	}
	if len(b) > MaxCommandSize {
		return 0, status.Errorf(codes.InvalidArgument, "command: %d bytes, at most %d (MaxCommandSize)", len(b), MaxCommandSize)
	}
	if s.raft.State() == raft.Leader {
		return s.applyLocal(b)
	}
	leader, conn, err := s.leaderConn(ctx)
	if err != nil {
		return 0, err
	}
	resp, err := hubpb.NewInternalClient(conn).Apply(ctx, &hubpb.ApplyRequest{Command: b})
	if err != nil {
		return 0, forwardedErr(leader, "", err)
	}
	if resp.GetErrorCode() != "" {
		return resp.GetIndex(), status.Error(codeFromName(resp.GetErrorCode()), resp.GetError())
	}
	return resp.GetIndex(), nil
}

func (s *Server) applyLocal(b []byte) (uint64, error) {
	if err := s.checkProtocol(fsm.MessageType(b[0])); err != nil {
		return 0, err
	}
	start := time.Now()
	f := s.raft.Apply(b, s.cfg.ApplyTimeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
			errors.Is(err, raft.ErrEnqueueTimeout) || errors.Is(err, raft.ErrRaftShutdown) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return 0, status.Errorf(codes.Unavailable, "hub: %v; retry", err)
		}
		return 0, status.Errorf(codes.Internal, "hub: apply: %v", err)
	}
	s.metrics.commit.Observe(time.Since(start).Seconds())
	res, _ := f.Response().(*fsm.Result)
	if res != nil && res.Err != nil {
		return f.Index(), status.Error(res.Err.Code, res.Err.Msg)
	}
	return f.Index(), nil
}

func codeFromName(name string) codes.Code {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if c.String() == name {
			return c
		}
	}
	return codes.Unknown
}

// readIndex returns an index that, once applied locally, makes a read
// linearizable: the last command at or below the leader's commit index,
// taken after the leader has confirmed its leadership in a term in which it
// has applied everything from earlier terms (a barrier). It covers every
// write committed before the read began, acknowledged or not, so two reads
// in sequence never go back in time even when served by different servers.
//
// It is a command index, not a Raft index, because only commands reach the
// FSM: fsm.AppliedIndex never points at a no-op, barrier or configuration
// entry, so waiting for it to reach a Raft index of such an entry would
// never end.
func (s *Server) readIndex(ctx context.Context) (uint64, error) {
	if s.raft.State() == raft.Leader {
		term := s.raft.CurrentTerm()
		if s.readyTerm.Load() != term {
			return 0, status.Error(codes.Unavailable, "hub: new leader still applying earlier entries; retry")
		}
		// Leadership is confirmed by committing a barrier entry appended
		// after this read arrived, not by VerifyLeader: hashicorp/raft
		// counts any AppendEntries success processed after the call as a
		// vote, including responses to requests sent before it, so a
		// leader paused past an election (SIGSTOP, a long GC) and resumed
		// could confirm itself with its followers' old answers and serve
		// its stale state (TestJepsen found it, once in ~45 pauses). Only
		// a quorum that acks an entry of this term sent after the read
		// can commit the barrier; followers that moved on refuse it.
		timeout := s.cfg.ApplyTimeout
		if dl, ok := ctx.Deadline(); ok {
			timeout = min(timeout, time.Until(dl))
		}
		if err := s.raft.Barrier(timeout).Error(); err != nil {
			return 0, status.Errorf(codes.Unavailable, "hub: leadership not confirmed: %v; retry", err)
		}
		if s.raft.CurrentTerm() != term {
			return 0, status.Error(codes.Unavailable, "hub: leadership changed during the read; retry")
		}
		return s.lastCommandAtOrBelow(s.raft.CommitIndex())
	}
	leader, conn, err := s.leaderConn(ctx)
	if err != nil {
		return 0, err
	}
	resp, err := hubpb.NewInternalClient(conn).ReadIndex(ctx, &hubpb.ReadIndexRequest{})
	if err != nil {
		// Whatever went wrong, the read can be retried.
		return 0, forwardedErr(leader, "read index: ", status.Error(codes.Unavailable, status.Convert(err).Message()))
	}
	return resp.GetIndex(), nil
}

// forwardedErr says that a call failed on its way to, or at, the leader,
// keeping the code: Unavailable (and Unknown or Canceled, which become it)
// means retry, and for a write that its outcome is unknown.
func forwardedErr(leader raft.ServerID, what string, err error) error {
	st := status.Convert(err)
	code := st.Code()
	if code == codes.Unknown || code == codes.Canceled {
		code = codes.Unavailable
	}
	return status.Errorf(code, "hub: forwarded to leader %s: %s%s", leader, what, strings.TrimPrefix(st.Message(), "hub: "))
}

// lastCommandAtOrBelow scans the leader's log back from idx to the first
// command entry. Entries above the FSM's applied index are never compacted,
// and a leader holds every committed entry, so the scan is short and sound.
func (s *Server) lastCommandAtOrBelow(idx uint64) (uint64, error) {
	floor := s.fsm.AppliedIndex()
	for i := idx; i > floor; i-- {
		var l raft.Log
		if err := s.wal.GetLog(i, &l); err != nil {
			return 0, status.Errorf(codes.Unavailable, "hub: read index: log entry %d: %v", i, err)
		}
		if l.Type == raft.LogCommand {
			return i, nil
		}
	}
	return floor, nil
}

// consistentRead returns a view of the store that includes every write
// acknowledged before the call. A server that cannot catch up within
// ConsistentReadTimeout answers Unavailable; it never serves a stale or
// empty view as authoritative.
func (s *Server) consistentRead(ctx context.Context) (*state.ReadTxn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConsistentReadTimeout)
	defer cancel()
	idx, err := s.readIndex(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.waitApplied(ctx, idx); err != nil {
		return nil, err
	}
	return s.fsm.Store().Read(), nil
}

// waitApplied polls the applied index until it reaches idx or ctx ends.
func (s *Server) waitApplied(ctx context.Context, idx uint64) error {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		applied := s.fsm.AppliedIndex()
		if applied >= idx {
			return nil
		}
		select {
		case <-ctx.Done():
			return status.Errorf(codes.Unavailable, "hub: server %s has not caught up (applied %d, leader committed %d); retry", s.cfg.Name, applied, idx)
		case <-s.stopCh:
			return status.Error(codes.Unavailable, "hub: shutting down")
		case <-tick.C:
		}
	}
}

// leaderConn returns the current leader's ID and a connection to its gRPC
// address.
func (s *Server) leaderConn(ctx context.Context) (raft.ServerID, *grpc.ClientConn, error) {
	_, id := s.raft.LeaderWithID()
	if id == "" {
		return "", nil, errNoLeader
	}
	if id == raft.ServerID(s.cfg.Name) {
		return "", nil, status.Error(codes.Unavailable, "hub: leadership changing; retry")
	}
	m, ok := s.members.get(string(id))
	if !ok || m.Meta.GRPC == "" {
		return "", nil, status.Errorf(codes.Unavailable, "hub: leader %s not known to gossip yet; retry", id)
	}
	conn, err := s.peers.get(m.Meta.GRPC)
	if err != nil {
		return "", nil, forwardedErr(id, "", err)
	}
	return id, conn, nil
}

// hubAddrs lists the gRPC addresses of every live server, this one first.
func (s *Server) hubAddrs() []string {
	addrs := []string{s.GRPCAddr()}
	for _, m := range s.members.snapshot() {
		if m.Name != s.cfg.Name && m.Health == "alive" && m.Meta.GRPC != "" {
			addrs = append(addrs, m.Meta.GRPC)
		}
	}
	sort.Strings(addrs[1:])
	return addrs
}

// peerConns caches gRPC connections to other hub servers.
type peerConns struct {
	s     *Server
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newPeerConns(s *Server) *peerConns {
	return &peerConns{s: s, conns: map[string]*grpc.ClientConn{}}
}

func (p *peerConns) get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	tlsCfg, err := p.s.certs.peerTLS()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	c, err := hubdial.Dial([]string{addr}, tlsCfg, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize)))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "hub: dial %s: %v", addr, err)
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peerConns) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, c := range p.conns {
		_ = c.Close()
		delete(p.conns, a)
	}
}

// internalService serves other hub servers.
type internalService struct {
	hubpb.UnimplementedInternalServer
	s *Server
}

func (i *internalService) Apply(ctx context.Context, req *hubpb.ApplyRequest) (*hubpb.ApplyResponse, error) {
	if i.s.raft.State() != raft.Leader {
		return nil, status.Error(codes.Unavailable, "hub: not the leader; retry")
	}
	t, _, known, err := fsm.Decode(req.GetCommand())
	if err != nil || !known {
		return nil, status.Errorf(codes.InvalidArgument, "command: %v (type %d)", err, t)
	}
	idx, err := i.s.applyLocal(req.GetCommand())
	if err != nil {
		st := status.Convert(err)
		if st.Code() == codes.Unavailable || st.Code() == codes.Internal {
			return nil, err
		}
		return &hubpb.ApplyResponse{Index: idx, ErrorCode: st.Code().String(), Error: st.Message()}, nil
	}
	return &hubpb.ApplyResponse{Index: idx}, nil
}

func (i *internalService) ReadIndex(ctx context.Context, _ *hubpb.ReadIndexRequest) (*hubpb.ReadIndexResponse, error) {
	if i.s.raft.State() != raft.Leader {
		return nil, status.Error(codes.Unavailable, "hub: not the leader; retry")
	}
	idx, err := i.s.readIndex(ctx)
	if err != nil {
		return nil, err
	}
	return &hubpb.ReadIndexResponse{Index: idx}, nil
}
