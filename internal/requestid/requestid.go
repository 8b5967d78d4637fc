// Package requestid makes writes to the hub safe to retry. A client names
// each write with a request ID, sent as gRPC metadata (MetadataKey), and
// sends the same ID again when it retries; the hub applies a write once per
// ID and answers a repeat with the first outcome (hub/fsm, "requests").
//
// The package holds the rules of an ID (Validate), the generator (New), the
// server's reading of it (FromIncoming), and the client side: an interceptor
// (RetryWrites) that gives each write call an ID and retries it on
// Unavailable with that ID. The hub and the meshfed CLI both use it, so the
// rules live in one place.
package requestid

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"google.golang.org/grpc/metadata"
)

// MetadataKey is the gRPC metadata key that carries a request ID.
const MetadataKey = "meshfed-request-id"

// Length bounds of an ID. The lower bound keeps IDs from colliding by
// accident: the hub's ID space is shared by every admin client.
const (
	MinLength = 16
	MaxLength = 128
)

// ErrInvalid is matched, under errors.Is, by every *Error.
var ErrInvalid = errors.New("requestid: invalid request ID")

// Error is an ID that breaks a rule. The hub answers it as InvalidArgument.
type Error struct {
	// ID is the rejected value, unmodified.
	ID string
	// Reason states the rule, with its bound.
	Reason string
}

func (e *Error) Error() string {
	id := e.ID
	if len(id) > MaxLength {
		id = id[:MaxLength] + "..."
	}
	return fmt.Sprintf("%s: %q %s", MetadataKey, id, e.Reason)
}

// Is reports whether target is ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// Validate checks an ID: MinLength to MaxLength characters, each an ASCII
// letter or digit, '-', '_', '.' or ':'. A UUID passes, and so does New's
// output.
func Validate(id string) error {
	if n := len(id); n < MinLength || n > MaxLength {
		return &Error{ID: id, Reason: fmt.Sprintf("is %d characters, want %d to %d", n, MinLength, MaxLength)}
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':'
		if !ok {
			return &Error{ID: id, Reason: fmt.Sprintf("has %q at offset %d; allowed are ASCII letters, digits and - _ . :", c, i)}
		}
	}
	return nil
}

// New returns a random ID: 32 hex digits (128 bits).
func New() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it crashes the program instead)
	return hex.EncodeToString(b[:])
}

// FromIncoming returns the request ID a server call carries. ok is false
// when it carries none; an invalid ID, or more than one, is an error
// (*Error).
func FromIncoming(ctx context.Context) (id string, ok bool, err error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(MetadataKey)
	switch len(vals) {
	case 0:
		return "", false, nil
	case 1:
	default:
		return "", false, &Error{ID: vals[0], Reason: fmt.Sprintf("is one of %d values; send one", len(vals))}
	}
	if err := Validate(vals[0]); err != nil {
		return "", false, err
	}
	return vals[0], true, nil
}

// NewOutgoingContext returns ctx carrying id for the calls made with it.
// RetryWrites keeps an ID set this way instead of generating one, so a
// caller that retries on its own (across process restarts, say) can reuse
// an ID.
func NewOutgoingContext(ctx context.Context, id string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, MetadataKey, id)
}

// fromOutgoing returns the ID ctx already carries for outgoing calls.
func fromOutgoing(ctx context.Context) (string, bool) {
	md, _ := metadata.FromOutgoingContext(ctx)
	if vals := md.Get(MetadataKey); len(vals) > 0 {
		return vals[0], true
	}
	return "", false
}
