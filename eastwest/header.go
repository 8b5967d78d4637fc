package eastwest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/meshfed/meshfed/federation"
)

// The east-west stream protocol, version 1. Every QUIC stream a gateway
// opens to a remote gateway starts with a request header; the remote
// gateway answers with a status before any payload flows, so the caller
// can still fail over to another cluster when the answer is not OK.
//
// Request header, big-endian:
//
//	version  uint8   1
//	kind     uint8   1 connect, 2 probe
//	length   uint16  bytes of body that follow, at most MaxHeaderBody
//	body:
//	  service   uint8 length + "namespace/name"   (connect; empty for probe)
//	  port      uint16                            service port
//	  source    uint8 length + cluster name       the caller's cluster
//	  identity  uint16 length + SPIFFE ID         the calling workload, if known
//	  trace     uint8 length + trace id           0 or 16 bytes
//	  subset    uint16 length + "k=v,k=v"         optional: only endpoints with these
//	                                              labels (a policy's subset), sorted by key
//	  ...       later versions append fields; a reader skips what it does not know
//	            (a field after subset is written after a subset length, 0 for none)
//
// Status, big-endian:
//
//	version  uint8   1
//	code     uint8   see Code
//	length   uint8   bytes of message that follow, at most MaxStatusMessage
//	message  UTF-8, for logs and the caller's error
const (
	protocolVersion = 1

	// MaxHeaderBody bounds a request header's body.
	MaxHeaderBody = 4096
	// MaxServiceLength bounds "namespace/name" (two 63-byte labels).
	MaxServiceLength = 127
	// MaxIdentityLength bounds the source workload's SPIFFE ID.
	MaxIdentityLength = 2048
	// MaxStatusMessage bounds a status message.
	MaxStatusMessage = 255
	// MaxSubsetLength bounds the encoded subset labels, and MaxSubsetLabels
	// their number.
	MaxSubsetLength = 1024
	MaxSubsetLabels = 16
	traceIDLength   = 16
)

// Kind is what a stream is for.
type Kind uint8

// Stream kinds. Append-only: the numbers are on the wire.
const (
	KindConnect Kind = 1
	KindProbe   Kind = 2
)

// Code is the answer of the receiving gateway.
type Code uint8

// Status codes. Append-only: the numbers are on the wire.
const (
	CodeOK Code = 0
	// CodeNoHealthyEndpoint: the service is exported here, but no ready
	// endpoint accepted a connection.
	CodeNoHealthyEndpoint Code = 1
	// CodeForbidden: the caller may not reach this service.
	CodeForbidden Code = 2
	// CodeUnknownService: this cluster does not export the service (or
	// that port of it).
	CodeUnknownService Code = 3
	// CodeBadRequest: the header did not parse.
	CodeBadRequest Code = 4
	// CodeOverloaded: a stream limit was reached.
	CodeOverloaded Code = 5
	// CodeDraining: the gateway is shutting down and takes no new work.
	CodeDraining Code = 6
)

func (c Code) String() string {
	switch c {
	case CodeOK:
		return "ok"
	case CodeNoHealthyEndpoint:
		return "no_healthy_endpoint"
	case CodeForbidden:
		return "forbidden"
	case CodeUnknownService:
		return "unknown_service"
	case CodeBadRequest:
		return "bad_request"
	case CodeOverloaded:
		return "overloaded"
	case CodeDraining:
		return "draining"
	}
	return fmt.Sprintf("code_%d", uint8(c))
}

// Header is a stream's request header.
type Header struct {
	Kind Kind
	// Service is "namespace/name" (empty for a probe).
	Service string
	Port    uint16
	// Source is the calling cluster's name.
	Source string
	// Identity is the calling workload's SPIFFE ID, when known.
	Identity string
	// TraceID is 16 bytes, or empty.
	TraceID []byte
	// Subset, when not empty, restricts the endpoints to those carrying
	// every one of these labels (a traffic policy's subset). A receiver
	// predating the field ignores it.
	Subset map[string]string
}

// ErrHeader matches every header and status decoding error.
var ErrHeader = errors.New("eastwest: bad stream header")

func headerErr(field string, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrHeader, field, fmt.Sprintf(format, args...))
}

// AppendHeader appends h's encoding to b. It fails, naming the field and
// the bound, for a header that a receiver would refuse.
func AppendHeader(b []byte, h *Header) ([]byte, error) {
	switch {
	case h.Kind != KindConnect && h.Kind != KindProbe:
		return b, headerErr("kind", "%d is not 1 (connect) or 2 (probe)", h.Kind)
	case len(h.Service) > MaxServiceLength:
		return b, headerErr("service", "%d bytes, at most %d", len(h.Service), MaxServiceLength)
	case len(h.Source) > 63:
		return b, headerErr("source", "%d bytes, at most 63", len(h.Source))
	case len(h.Identity) > MaxIdentityLength:
		return b, headerErr("identity", "%d bytes, at most %d", len(h.Identity), MaxIdentityLength)
	case len(h.TraceID) != 0 && len(h.TraceID) != traceIDLength:
		return b, headerErr("trace_id", "%d bytes, want 0 or %d", len(h.TraceID), traceIDLength)
	}
	if err := checkHeader(h); err != nil {
		return b, err
	}
	subset := encodeSubset(h.Subset)
	if len(subset) > MaxSubsetLength {
		return b, headerErr("subset", "%d bytes, at most %d", len(subset), MaxSubsetLength)
	}
	body := 1 + len(h.Service) + 2 + 1 + len(h.Source) + 2 + len(h.Identity) + 1 + len(h.TraceID)
	if len(subset) > 0 {
		body += 2 + len(subset)
	}
	b = append(b, protocolVersion, byte(h.Kind))
	b = binary.BigEndian.AppendUint16(b, uint16(body))
	b = append(b, byte(len(h.Service)))
	b = append(b, h.Service...)
	b = binary.BigEndian.AppendUint16(b, h.Port)
	b = append(b, byte(len(h.Source)))
	b = append(b, h.Source...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.Identity)))
	b = append(b, h.Identity...)
	b = append(b, byte(len(h.TraceID)))
	b = append(b, h.TraceID...)
	if len(subset) > 0 {
		b = binary.BigEndian.AppendUint16(b, uint16(len(subset)))
		b = append(b, subset...)
	}
	return b, nil
}

// encodeSubset is "k=v,k=v" sorted by key ("" for none).
func encodeSubset(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var sb strings.Builder
	for i, k := range keys {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(k)
		sb.WriteByte('=')
		sb.WriteString(m[k])
	}
	return sb.String()
}

// decodeSubset parses encodeSubset's form.
func decodeSubset(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	m := map[string]string{}
	for kv := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, headerErr("subset", "%q is not key=value", kv)
		}
		if _, dup := m[k]; dup {
			return nil, headerErr("subset", "label %q twice", k)
		}
		m[k] = v
	}
	return m, nil
}

// ReadHeader reads one request header from r. buf, if large enough, is
// used for the body (no allocation but the strings).
func ReadHeader(r io.Reader, buf []byte) (*Header, error) {
	var pre [4]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHeader, err)
	}
	if pre[0] != protocolVersion {
		return nil, headerErr("version", "%d, this gateway speaks %d", pre[0], protocolVersion)
	}
	n := int(binary.BigEndian.Uint16(pre[2:]))
	if n > MaxHeaderBody {
		return nil, headerErr("length", "%d bytes, at most %d", n, MaxHeaderBody)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	body := buf[:n]
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("%w: body: %w", ErrHeader, err)
	}
	return decodeBody(Kind(pre[1]), body)
}

// DecodeHeader decodes a whole request header held in b.
func DecodeHeader(b []byte) (*Header, error) {
	if len(b) < 4 {
		return nil, headerErr("length", "%d bytes, a header has at least 4", len(b))
	}
	if b[0] != protocolVersion {
		return nil, headerErr("version", "%d, this gateway speaks %d", b[0], protocolVersion)
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	if n > MaxHeaderBody {
		return nil, headerErr("length", "%d bytes, at most %d", n, MaxHeaderBody)
	}
	if len(b)-4 != n {
		return nil, headerErr("length", "says %d bytes, %d follow", n, len(b)-4)
	}
	return decodeBody(Kind(b[1]), b[4:])
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) take(field string, n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err = headerErr(field, "truncated: want %d bytes, %d left", n, len(r.b))
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8(field string) int {
	v := r.take(field, 1)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (r *reader) u16(field string) int {
	v := r.take(field, 2)
	if v == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(v))
}

func decodeBody(kind Kind, body []byte) (*Header, error) {
	if kind != KindConnect && kind != KindProbe {
		return nil, headerErr("kind", "%d is not 1 (connect) or 2 (probe)", kind)
	}
	r := &reader{b: body}
	h := &Header{Kind: kind}
	n := r.u8("service")
	if n > MaxServiceLength {
		return nil, headerErr("service", "%d bytes, at most %d", n, MaxServiceLength)
	}
	h.Service = string(r.take("service", n))
	h.Port = uint16(r.u16("port"))
	h.Source = string(r.take("source", r.u8("source")))
	n = r.u16("identity")
	if n > MaxIdentityLength {
		return nil, headerErr("identity", "%d bytes, at most %d", n, MaxIdentityLength)
	}
	h.Identity = string(r.take("identity", n))
	n = r.u8("trace_id")
	if n != 0 && n != traceIDLength {
		return nil, headerErr("trace_id", "%d bytes, want 0 or %d", n, traceIDLength)
	}
	if t := r.take("trace_id", n); len(t) > 0 {
		h.TraceID = append([]byte(nil), t...)
	}
	if r.err == nil && len(r.b) > 0 {
		n = r.u16("subset")
		if n > MaxSubsetLength {
			return nil, headerErr("subset", "%d bytes, at most %d", n, MaxSubsetLength)
		}
		if s := r.take("subset", n); r.err == nil {
			m, err := decodeSubset(string(s))
			if err != nil {
				return nil, err
			}
			h.Subset = m
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if err := checkHeader(h); err != nil {
		return nil, err
	}
	// Trailing bytes are fields appended later within version 1: skipped.
	return h, nil
}

// checkHeader is the one rule for a header's values, applied when one is
// encoded and when one is decoded: a connect names a valid service key and
// a port; the source, when set, is a valid cluster name; the identity, when
// set, is a UTF-8 SPIFFE ID. Nothing a peer sends reaches a log or a
// metric label without passing it.
func checkHeader(h *Header) error {
	if h.Kind == KindConnect {
		if _, err := federation.ParseServiceKey(h.Service); err != nil {
			return headerErr("service", "%v", err)
		}
		if h.Port == 0 {
			return headerErr("port", "a connect stream names a port from 1 to 65535")
		}
	} else if h.Service != "" {
		return headerErr("service", "a probe names no service")
	}
	if h.Source != "" {
		if _, err := federation.ParseClusterName(h.Source); err != nil {
			return headerErr("source", "%v", err)
		}
	}
	if h.Identity != "" && (!utf8.ValidString(h.Identity) || !strings.HasPrefix(h.Identity, "spiffe://")) {
		return headerErr("identity", "must be a UTF-8 SPIFFE ID (spiffe://...)")
	}
	if len(h.Subset) > MaxSubsetLabels {
		return headerErr("subset", "%d labels, at most %d", len(h.Subset), MaxSubsetLabels)
	}
	for k, v := range h.Subset {
		if k == "" || strings.ContainsAny(k, ",=") || strings.ContainsAny(v, ",=") || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return headerErr("subset", "label %q=%q: keys are not empty; neither holds ',' or '='", k, v)
		}
	}
	return nil
}

// Status is the receiving gateway's answer.
type Status struct {
	Code    Code
	Message string
}

func (s Status) Error() string {
	if s.Message == "" {
		return "eastwest: remote gateway: " + s.Code.String()
	}
	return "eastwest: remote gateway: " + s.Code.String() + ": " + s.Message
}

// AppendStatus appends a status's encoding to b; a longer message is cut
// at MaxStatusMessage bytes (on a UTF-8 boundary).
func AppendStatus(b []byte, code Code, msg string) []byte {
	if len(msg) > MaxStatusMessage {
		msg = strings.ToValidUTF8(msg[:MaxStatusMessage], "")
	}
	b = append(b, protocolVersion, byte(code), byte(len(msg)))
	return append(b, msg...)
}

// ReadStatus reads one status from r.
func ReadStatus(r io.Reader) (Status, error) {
	var pre [3]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return Status{}, fmt.Errorf("%w: status: %w", ErrHeader, err)
	}
	if pre[0] != protocolVersion {
		return Status{}, headerErr("status.version", "%d, this gateway speaks %d", pre[0], protocolVersion)
	}
	st := Status{Code: Code(pre[1])}
	if n := int(pre[2]); n > 0 {
		msg := make([]byte, n)
		if _, err := io.ReadFull(r, msg); err != nil {
			return Status{}, fmt.Errorf("%w: status message: %w", ErrHeader, err)
		}
		st.Message = string(msg)
	}
	return st, nil
}
