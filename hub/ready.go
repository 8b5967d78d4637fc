package hub

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// notReady is nil once the server holds the hub CA in its applied state,
// and before that an Unavailable status saying why: a restarted server
// serves TLS with the certificate it had at once, and answers every call
// this way until it has caught up far enough to act on it.
func (s *Server) notReady() error {
	select {
	case <-s.certs.ready:
		return nil
	default:
	}
	return status.Errorf(codes.Unavailable, "hub: not ready: %s; retry", s.notReadyReason())
}

func (s *Server) notReadyReason() string {
	applied := s.fsm.AppliedIndex()
	_, leader := s.raft.LeaderWithID()
	switch {
	case s.raft.LastIndex() == 0 && s.cfg.BootstrapExpect > 0 && !s.boot.isDisabled():
		return fmt.Sprintf("not bootstrapped: waiting for %d servers (bootstrap_expect)", s.cfg.BootstrapExpect)
	case s.raft.LastIndex() == 0:
		return "not a member yet: waiting for the leader to add this server"
	case leader == "":
		return fmt.Sprintf("no leader known, and the hub CA is not applied yet (applied index %d)", applied)
	default:
		return fmt.Sprintf("catching up with leader %s: the hub CA is not applied yet (applied index %d)", leader, applied)
	}
}

// readyExempt lists what a server answers before it is ready: Status, the
// operator's view of a server that is not, and server-to-server calls,
// which check Raft state themselves.
func readyExempt(method string) bool {
	return method == "/meshfed.federation.v1.Admin/Status" || strings.HasPrefix(method, "/meshfed.hub.v1.Internal/")
}

func (s *Server) readyUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if !readyExempt(info.FullMethod) {
		if err := s.notReady(); err != nil {
			return nil, err
		}
	}
	return h(ctx, req)
}

func (s *Server) readyStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if !readyExempt(info.FullMethod) {
		if err := s.notReady(); err != nil {
			return err
		}
	}
	return h(srv, ss)
}
