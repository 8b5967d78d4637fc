package federation

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// JoinTokenPrefix starts every join token; the digit is the format version.
const JoinTokenPrefix = "mfjoin1."

// Join token limits.
const (
	MaxJoinTokenLength  = 4096
	MaxJoinTokenAddrs   = 16
	JoinTokenSecretSize = 32
	JoinTokenIDLength   = 16
)

// JoinToken is what an operator hands a cluster to join the federation: which
// hub to call, how to recognise it, and a one-time secret bound to a cluster.
type JoinToken struct {
	// ID names the token in listings and revocations; it is not secret.
	ID string
	// Secret proves possession; the hub stores only its SHA-256.
	Secret []byte
	// Cluster is the only cluster name the token admits.
	Cluster ClusterName
	// CAFingerprint is the hex SHA-256 of the hub CA certificate's DER bytes.
	// The joining side refuses a hub that does not present a chain to it.
	CAFingerprint string
	// Addrs are hub gRPC addresses (host:port).
	Addrs []string
}

type joinTokenWire struct {
	ID      string   `json:"id"`
	Secret  string   `json:"s"`
	Cluster string   `json:"c"`
	FP      string   `json:"fp"`
	Addrs   []string `json:"a"`
}

// Encode returns the token as an operator hands it over. It contains the
// secret: never log it.
func (t JoinToken) Encode() string {
	return JoinTokenPrefix + base64.RawURLEncoding.EncodeToString(t.document())
}

// String describes the token without its secret, so that formatting a token
// in a log line does not leak it.
func (t JoinToken) String() string {
	return fmt.Sprintf("join token %s for cluster %s (secret redacted)", t.ID, t.Cluster)
}

// document is the canonical JSON form: fixed key order, no HTML escaping.
func (t JoinToken) document() []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(joinTokenWire{
		ID: t.ID, Secret: base64.RawURLEncoding.EncodeToString(t.Secret),
		Cluster: t.Cluster.String(), FP: t.CAFingerprint, Addrs: t.Addrs,
	}); err != nil {
		panic(err) // strings and slices of strings always marshal
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func tokenErr(field, value, reason string) error {
	return &FieldError{Field: "token." + field, Value: value, Reason: reason}
}

// ParseJoinToken decodes and checks a token's shape. It does not say whether
// the hub will accept it.
func ParseJoinToken(s string) (JoinToken, error) {
	s = strings.TrimSpace(s)
	if len(s) > MaxJoinTokenLength {
		return JoinToken{}, tokenErr("length", fmt.Sprint(len(s)), fmt.Sprintf("at most %d characters", MaxJoinTokenLength))
	}
	if !strings.HasPrefix(s, JoinTokenPrefix) {
		return JoinToken{}, tokenErr("prefix", "", "a join token starts with "+JoinTokenPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(s[len(JoinTokenPrefix):])
	if err != nil {
		return JoinToken{}, tokenErr("encoding", "", "not base64url: "+err.Error())
	}
	var w joinTokenWire
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return JoinToken{}, tokenErr("encoding", "", "not a token document: "+err.Error())
	}
	if len(w.ID) != JoinTokenIDLength || !isHex(w.ID) {
		return JoinToken{}, tokenErr("id", w.ID, fmt.Sprintf("must be %d hex characters", JoinTokenIDLength))
	}
	secret, err := base64.RawURLEncoding.DecodeString(w.Secret)
	if err != nil || len(secret) != JoinTokenSecretSize {
		return JoinToken{}, tokenErr("secret", "", fmt.Sprintf("must be %d bytes of base64url", JoinTokenSecretSize))
	}
	cluster, err := ParseClusterName(w.Cluster)
	if err != nil {
		return JoinToken{}, tokenErr("cluster", w.Cluster, "must be a cluster name: "+err.Error())
	}
	if len(w.FP) != 64 || !isHex(w.FP) || strings.ToLower(w.FP) != w.FP {
		return JoinToken{}, tokenErr("fp", w.FP, "must be a lowercase hex SHA-256 (64 characters)")
	}
	if len(w.Addrs) == 0 || len(w.Addrs) > MaxJoinTokenAddrs {
		return JoinToken{}, tokenErr("a", fmt.Sprint(len(w.Addrs)), fmt.Sprintf("must list 1 to %d hub addresses", MaxJoinTokenAddrs))
	}
	for i, a := range w.Addrs {
		if err := checkHostPort(a); err != nil {
			return JoinToken{}, tokenErr(fmt.Sprintf("a[%d]", i), a, err.Error())
		}
	}
	t := JoinToken{ID: w.ID, Secret: secret, Cluster: cluster, CAFingerprint: w.FP, Addrs: w.Addrs}
	// One token, one spelling: reject case-folded or duplicate keys, extra
	// data and any other non-canonical form.
	if !bytes.Equal(t.document(), raw) {
		return JoinToken{}, tokenErr("encoding", "", "not in canonical form")
	}
	return t, nil
}

// checkHostPort accepts an IP address or DNS name and a port in 1..65535.
func checkHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return errors.New("must be host:port")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 || strconv.Itoa(p) != port {
		return errors.New("port must be a number in 1..65535")
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	if host == "" || len(host) > 253 {
		return errors.New("host must be an IP address or a DNS name of at most 253 characters")
	}
	for _, label := range strings.Split(host, ".") {
		if !isLabel(strings.ToLower(label)) {
			return errors.New("host must be an IP address or a DNS name")
		}
	}
	return nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}
