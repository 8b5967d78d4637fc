package hub

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/internal/requestid"
)

// Request IDs make writes retry-safe. Every write is proposed as an
// fsm.RequestType command carrying a request ID, and the FSM applies it
// once per ID (hub/fsm, "requests"). An Admin client may name its write
// (metadata requestid.MetadataKey) and retry it with that name after an
// Unavailable, whose outcome is unknown; the hub names its own writes, so
// a follower can retry a forward to the leader once.

// writeRequest identifies a write for deduplication.
type writeRequest struct {
	id string
	// fingerprint is the SHA-256 of what defines the request: a reused ID
	// with another fingerprint is refused.
	fingerprint []byte
}

type writeRequestKey struct{}

func withWriteRequest(ctx context.Context, r writeRequest) context.Context {
	return context.WithValue(ctx, writeRequestKey{}, r)
}

// writeRequestFrom returns the client's request carried by ctx.
func writeRequestFrom(ctx context.Context) (writeRequest, bool) {
	r, ok := ctx.Value(writeRequestKey{}).(writeRequest)
	return r, ok
}

// requestUnary reads the request ID of an Admin call. An invalid one is
// InvalidArgument naming the metadata key and the bound. The fingerprint
// covers the method and the request message, so one ID cannot stand for
// two different requests.
func (s *Server) requestUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if !strings.HasPrefix(info.FullMethod, "/meshfed.federation.v1.Admin/") {
		return h(ctx, req)
	}
	id, ok, err := requestid.FromIncoming(ctx)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if !ok {
		return h(ctx, req)
	}
	msg, isProto := req.(proto.Message)
	if !isProto {
		return nil, status.Errorf(codes.Internal, "hub: %s: request is %T, not a protobuf message", info.FullMethod, req)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "hub: fingerprint of %s: %v", info.FullMethod, err)
	}
	h256 := sha256.New()
	h256.Write([]byte(info.FullMethod))
	h256.Write([]byte{0})
	h256.Write(b)
	return h(withWriteRequest(ctx, writeRequest{id: id, fingerprint: h256.Sum(nil)}), req)
}

// testHooks let tests reach into the write path; all nil in production.
type testHooks struct {
	// afterForward sees each forwarded write's answer from the leader and
	// may replace it (a lost response: the leader applied the write, the
	// follower hears Unavailable).
	afterForward func(*hubpb.ApplyResponse, error) (*hubpb.ApplyResponse, error)
	// beforePropose runs on the leader just before it checks the caller's
	// deadline and proposes (a slow leader).
	beforePropose func(ctx context.Context)
}

// tokenSalt separates the join-token derivation from any other use of the
// hub CA key.
const tokenSalt = "meshfed/join-token/v1"

// deriveToken returns the ID and secret of the join token a request
// creates: HKDF-SHA256 keyed with the hub CA private key (replicated
// state: every server holds it, no client does) over the request ID and
// fingerprint. A retry of the request, on any server, derives the same
// token, so its caller gets the token the hub stored, of which the hub
// keeps only the secret's hash.
func deriveToken(caKeyPEM []byte, r writeRequest) (id string, secret []byte, err error) {
	if len(caKeyPEM) == 0 {
		return "", nil, errors.New("hub: no hub CA key to derive a token from")
	}
	info := r.id + "\x00" + string(r.fingerprint)
	idLen := federation.JoinTokenIDLength / 2
	b, err := hkdf.Key(sha256.New, caKeyPEM, []byte(tokenSalt), info, idLen+federation.JoinTokenSecretSize)
	if err != nil {
		return "", nil, err
	}
	return hex.EncodeToString(b[:idLen]), b[idLen:], nil
}
