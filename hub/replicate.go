package hub

import (
	"context"
	"crypto/sha256"
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

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/hub/state"
	"github.com/meshfed/meshfed/internal/hubdial"
	"github.com/meshfed/meshfed/internal/requestid"
)

// errNoLeader is returned (as Unavailable) while there is no leader to serve a
// write or confirm a read.
var errNoLeader = status.Error(codes.Unavailable, "hub: no leader; retry")

// applied is what a handler learns of its write.
type applied struct {
	// index is the Raft index of the entry that applied the write: for a
	// repeated request, the first one's.
	index uint64
	// duplicate: the write repeated a request already applied, and took
	// no effect now.
	duplicate bool
	// Set when the FSM recorded the write as a request (every server
	// applies protocol 4): CreateToken's token as stored and the hub
	// addresses its string names, RotateCA's resulting ca_rotation.
	token      *hubpb.Token
	tokenAddrs []string
	caRotation uint64
	// ApplyPolicies: what was done to each policy.
	policyActions []fedv1.PolicyAction
	// record is the FSM's record of the request (nil for a bare command).
	record *hubpb.RequestRecord
}

func appliedFrom(res *fsm.Result) applied {
	return applied{
		index: res.Index, duplicate: res.Duplicate, record: res.Request,
		token: res.Token, tokenAddrs: res.TokenAddrs, caRotation: res.CARotation,
		policyActions: res.PolicyActions,
	}
}

// apply proposes a command and waits until it is committed and applied,
// forwarding it to the leader when this server is not. The returned index is
// the command's Raft index. An Unavailable error from a forwarded write means
// the outcome is unknown.
func (s *Server) apply(ctx context.Context, t fsm.MessageType, msg proto.Message) (uint64, error) {
	a, err := s.propose(ctx, t, msg)
	return a.index, err
}

// propose is apply with everything the FSM answered.
//
// One rule decides whether the command is wrapped in a Request
// (fsm.RequestType), which the FSM applies once per request ID and
// records: it is wrapped when it may be sent twice under one ID. That is
// when the client named it (its request ID is in ctx), or when this server
// is not the leader and forwards it (with an ID made here), because a
// forward that fails with Unavailable is sent once more. The leader's own
// write without a client ID goes bare: nobody else holds an ID for it, so
// nothing could repeat it, and a record would only cost every server a
// table write. Until every server applies protocol version 4 every write
// goes bare, without deduplication.
func (s *Server) propose(ctx context.Context, t fsm.MessageType, msg proto.Message) (applied, error) {
	b, err := fsm.Encode(t, msg)
	if err != nil {
		return applied{}, status.Error(codes.Internal, err.Error())
	}
	if len(b) > MaxCommandSize {
		return applied{}, status.Errorf(codes.InvalidArgument, "command: %d bytes, at most %d (MaxCommandSize)", len(b), MaxCommandSize)
	}
	if err := deadlinePassed(ctx, "before the write was proposed"); err != nil {
		return applied{}, err
	}
	req, named := writeRequestFrom(ctx)
	leader := s.raft.State() == raft.Leader
	wrapped := false
	if (named || !leader) && s.checkProtocol(fsm.RequestType) == nil {
		if !named {
			fp := sha256.Sum256(b)
			req = writeRequest{id: requestid.New(), fingerprint: fp[:]}
		}
		if b, err = fsm.EncodeRequest(req.id, req.fingerprint, time.Now().UnixMilli(), b); err != nil {
			return applied{}, status.Error(codes.Internal, err.Error())
		}
		wrapped = true
	}
	if leader {
		return s.applyLocal(ctx, b)
	}
	a, err := s.forward(ctx, b)
	if wrapped && status.Code(err) == codes.Unavailable {
		s.log.Debug("forwarded write failed; sending it once more with its request ID", "type", t, "err", err)
		if !s.pause(ctx, forwardRetryDelay) {
			return a, err
		}
		if s.raft.State() == raft.Leader {
			return s.applyLocal(ctx, b)
		}
		a, err = s.forward(ctx, b)
	}
	return a, err
}

// forwardRetryDelay is how long a follower waits before it sends a failed
// forward once more: about an election, for the leadership to settle.
const forwardRetryDelay = 300 * time.Millisecond

// pause waits d, less if ctx would end first, and reports whether ctx
// still has time and the server is running.
func (s *Server) pause(ctx context.Context, d time.Duration) bool {
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl)/2)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return ctx.Err() == nil
	case <-ctx.Done():
	case <-s.stopCh:
	}
	return false
}

// forward sends an encoded command to the leader's Internal.Apply.
func (s *Server) forward(ctx context.Context, b []byte) (applied, error) {
	leader, conn, err := s.leaderConn(ctx)
	if err != nil {
		return applied{}, err
	}
	resp, err := hubpb.NewInternalClient(conn).Apply(ctx, &hubpb.ApplyRequest{Command: b})
	if hook := s.cfg.hooks.afterForward; hook != nil {
		resp, err = hook(resp, err)
	}
	if err != nil {
		return applied{}, forwardedErr(leader, "", err)
	}
	a := applied{index: resp.GetIndex()}
	if rec := resp.GetRequest(); rec != nil {
		a = appliedFrom(fsm.ResultFromRecord(rec, resp.GetDuplicate()))
	}
	if resp.GetErrorCode() != "" {
		return a, status.Error(codeFromName(resp.GetErrorCode()), resp.GetError())
	}
	return a, nil
}

// deadlinePassed is DeadlineExceeded (or Canceled) if ctx is done: the
// write was not proposed, so it did not happen.
func deadlinePassed(ctx context.Context, when string) error {
	switch ctx.Err() {
	case nil:
		return nil
	case context.DeadlineExceeded:
		return status.Errorf(codes.DeadlineExceeded, "hub: the caller's deadline passed %s; it was not applied", when)
	default:
		return status.Errorf(codes.Canceled, "hub: the caller canceled %s; it was not applied", when)
	}
}

// applyLocal proposes an encoded command on the leader. It proposes only
// within the caller's deadline (ctx), for at most ApplyTimeout, and
// waits for the outcome no longer than ctx lasts.
func (s *Server) applyLocal(ctx context.Context, b []byte) (applied, error) {
	if fsm.MessageType(b[0])&^fsm.IgnoreUnknownFlag == fsm.RequestType && s.checkProtocol(fsm.RequestType) != nil {
		// A server that does not apply requests yet (it joined since the
		// follower wrapped this): the bare command, without deduplication.
		var err error
		if b, err = fsm.Unwrap(b); err != nil {
			return applied{}, status.Errorf(codes.InvalidArgument, "command: %v", err)
		}
	}
	inner, err := fsm.Unwrap(b)
	if err != nil {
		return applied{}, status.Errorf(codes.InvalidArgument, "command: %v", err)
	}
	if err := s.checkProtocol(fsm.MessageType(inner[0])); err != nil {
		return applied{}, err
	}
	if hook := s.cfg.hooks.beforePropose; hook != nil {
		hook(ctx)
	}
	timeout := s.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if err := deadlinePassed(ctx, "before the leader proposed the write"); err != nil {
		return applied{}, err
	}
	if timeout <= 0 {
		return applied{}, status.Error(codes.DeadlineExceeded, "hub: the caller's deadline passed before the leader proposed the write; it was not applied")
	}
	start := time.Now()
	f := s.raft.Apply(b, timeout)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		code := codes.DeadlineExceeded
		if ctx.Err() == context.Canceled {
			code = codes.Canceled
		}
		return applied{}, status.Errorf(code, "hub: %v while the leader was committing the write; its outcome is unknown (a retry with the same %s is applied at most once)", ctx.Err(), requestid.MetadataKey)
	}
	if err != nil {
		if errors.Is(err, raft.ErrEnqueueTimeout) && timeout < s.cfg.ApplyTimeout {
			return applied{}, status.Errorf(codes.DeadlineExceeded, "hub: the caller's deadline passed before the leader could propose the write (it waited %v); it was not applied", timeout.Round(time.Millisecond))
		}
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
			errors.Is(err, raft.ErrEnqueueTimeout) || errors.Is(err, raft.ErrRaftShutdown) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return applied{}, status.Errorf(codes.Unavailable, "hub: %v; retry", err)
		}
		return applied{}, status.Errorf(codes.Internal, "hub: apply: %v", err)
	}
	s.metrics.commit.Observe(time.Since(start).Seconds())
	res, _ := f.Response().(*fsm.Result)
	if res == nil {
		return applied{index: f.Index()}, nil
	}
	a := appliedFrom(res)
	if res.Err != nil {
		return a, status.Error(res.Err.Code, res.Err.Msg)
	}
	return a, nil
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
	inner, err := fsm.Unwrap(req.GetCommand())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "command: %v", err)
	}
	t, _, known, err := fsm.Decode(inner) // what a Request wraps must be known too
	if err != nil || !known {
		return nil, status.Errorf(codes.InvalidArgument, "command: %v (type %d)", err, t)
	}
	a, err := i.s.applyLocal(ctx, req.GetCommand())
	resp := &hubpb.ApplyResponse{Index: a.index}
	if err != nil {
		st := status.Convert(err)
		switch st.Code() {
		case codes.Unavailable, codes.Internal, codes.DeadlineExceeded, codes.Canceled:
			return nil, err // not the FSM's answer
		}
		resp.ErrorCode, resp.Error = st.Code().String(), st.Message()
	}
	resp.Request, resp.Duplicate = a.record, a.duplicate
	return resp, nil
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
