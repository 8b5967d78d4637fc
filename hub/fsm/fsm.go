package fsm

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/hub/state"
)

// Limits enforced deterministically in Apply (handlers check them earlier too,
// with friendlier errors; these are the backstop).
const (
	MaxClusters          = 1024
	MaxExportsPerCluster = 4096
	MaxPolicies          = 4096
	MaxTokens            = 10000
	MaxFederations       = 256
	// MaxExportBytesPerCluster bounds the encoded size of one cluster's
	// exported services together (state.ReadTxn.ExportBytes).
	MaxExportBytesPerCluster = 8 << 20
	// MaxCommandBytes bounds a command as the FSM accepts it; the hub
	// proposes nothing larger (hub.MaxCommandSize is smaller still).
	MaxCommandBytes = 4 << 20
	// Used or expired tokens are pruned this long after they stop being usable.
	tokenRetentionMs = 24 * 3600 * 1000
	// MaxConnectionLeaseMs bounds a connection lease (CmdRenewConnections).
	MaxConnectionLeaseMs = 10 * 60 * 1000
	// Leases of a server that stopped renewing (it crashed, or was removed
	// for good) are pruned this long after they expired, by any server's
	// renewal.
	connectionRetentionMs = 24 * 3600 * 1000
	// RequestTTL is how long the outcome of a request (a Request command)
	// is kept: a repeat of its ID within it gets the recorded result, a
	// repeat after it is applied as new. It is measured with the commands'
	// now_ms, so it is the same on every server.
	RequestTTL = time.Hour
	// MaxRequests bounds the recorded requests; beyond it the oldest go
	// first, whatever their age. At 100 writes a second a record still
	// lives 100 s, far longer than any client retries.
	MaxRequests = 10000
	// MaxRequestIDBytes bounds a request ID as the FSM accepts it (the hub
	// checks the ID earlier, with the same bound: requestid.MaxLength).
	MaxRequestIDBytes = 128
)

// Error is a command's deterministic refusal. It travels between servers as
// a gRPC code plus message.
type Error struct {
	Code codes.Code
	Msg  string
}

func (e *Error) Error() string { return "fsm: " + e.Msg }

func refuse(code codes.Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Result is what Apply returns for every command (raft.ApplyFuture.Response).
type Result struct {
	// Err is nil when the command took effect.
	Err *Error
	// Index is the Raft index of the entry that applied the command: the
	// entry's own, or, for a repeated request, the first one's.
	Index uint64
	// Request is the FSM's record of a Request command (nil for a bare
	// command): the same record for the first application and for every
	// repeat.
	Request *hubpb.RequestRecord
	// Duplicate is true for a repeated request, which took no effect.
	Duplicate bool
	// What handlers need for their reply, set when the command took
	// effect. CreateToken: the token as stored. RotateCA: the cluster's
	// ca_rotation after it.
	Token      *hubpb.Token
	TokenAddrs []string
	CARotation uint64
	// ApplyPolicies: what was done to each policy, in the command's order.
	PolicyActions []fedv1.PolicyAction
}

// ResultFromRecord is the result a repeat of the recorded request gets.
func ResultFromRecord(rec *hubpb.RequestRecord, duplicate bool) *Result {
	res := &Result{
		Index: rec.GetIndex(), Request: rec, Duplicate: duplicate,
		Token: rec.GetToken(), TokenAddrs: rec.GetTokenAddrs(), CARotation: rec.GetCaRotation(),
		PolicyActions: rec.GetPolicyActions(),
	}
	if rec.GetErrorCode() != uint32(codes.OK) {
		res.Err = &Error{Code: codes.Code(rec.GetErrorCode()), Msg: rec.GetError()}
	}
	return res
}

// FSM implements raft.FSM over a state.Store.
type FSM struct {
	log *slog.Logger

	mu    sync.RWMutex
	store *state.Store
	// applied is the index of the last command log this FSM has applied.
	// Unlike raft.AppliedIndex, which moves when entries are handed to the
	// FSM goroutine, it moves only once the store shows the command.
	applied atomic.Uint64
}

// AppliedIndex is the Raft index of the last command applied to the store.
// Every server applies the same commands, so the values are comparable
// across servers: a read that waits for AppliedIndex to reach the leader's
// value sees every write the leader has acknowledged.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

var _ raft.FSM = (*FSM)(nil)

// New returns an FSM over an empty store.
func New(log *slog.Logger) *FSM {
	return &FSM{log: log, store: state.New()}
}

// Store returns the current store. After a restore a new store is returned;
// holders of the old one see its Abandoned channel closed.
func (f *FSM) Store() *state.Store {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.store
}

// Apply applies one committed log entry. It is deterministic: everything it
// depends on is in the command or the store.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return &Result{}
	}
	defer f.applied.Store(l.Index)
	if len(l.Data) > MaxCommandBytes {
		return &Result{Err: refuse(codes.InvalidArgument, "command: %d bytes, at most %d", len(l.Data), MaxCommandBytes)}
	}
	t, msg, known, err := Decode(l.Data)
	if err != nil {
		// A known command that does not decode was proposed by a buggy server:
		// applying nothing is the same on every server, so it stays deterministic.
		f.log.Error("undecodable command", "index", l.Index, "err", err)
		return &Result{Err: refuse(codes.InvalidArgument, "%v", err)}
	}
	if !known {
		f.unknown(t, l.Index)
		return &Result{Index: l.Index}
	}
	t &^= IgnoreUnknownFlag
	if t == RequestType {
		return f.applyRequest(l.Index, msg.(*hubpb.CmdRequest))
	}
	w := f.Store().Write(l.Index)
	res := &Result{Index: l.Index}
	if res.Err = apply(w, t, msg, res); res.Err != nil {
		w.Abort()
		return res
	}
	reply(w, t, msg, res)
	w.Commit()
	return res
}

// unknown ignores a command of a type this build does not know if its type
// has the IgnoreUnknownFlag, and panics otherwise.
func (f *FSM) unknown(t MessageType, index uint64) {
	if t&IgnoreUnknownFlag != 0 {
		f.log.Warn("ignoring unknown command", "type", uint8(t), "index", index)
		return
	}
	panic(fmt.Sprintf("fsm: unknown command type %d at index %d: upgrade this server", uint8(t), index))
}

// applyRequest applies the command a Request wraps unless its request ID
// was applied within RequestTTL, and records the outcome (refusals
// included) under the ID. A repeat gets the recorded result and changes
// nothing; the same ID with another fingerprint or command type is
// refused, and nothing is recorded for it.
func (f *FSM) applyRequest(index uint64, c *hubpb.CmdRequest) *Result {
	id, now := c.GetRequestId(), c.GetNowMs()
	if id == "" || len(id) > MaxRequestIDBytes {
		return &Result{Index: index, Err: refuse(codes.InvalidArgument, "request_id: %d bytes, want 1 to %d", len(id), MaxRequestIDBytes)}
	}
	t := MessageType(c.GetType())
	if c.GetType() > math.MaxUint8 || t&^IgnoreUnknownFlag == RequestType {
		return &Result{Index: index, Err: refuse(codes.InvalidArgument, "request %q: type %d cannot be wrapped in a request", id, c.GetType())}
	}
	store := f.Store()
	w := store.Write(index)
	if rec := w.Request(id); rec != nil && now-rec.GetAppliedAtMs() < RequestTTL.Milliseconds() {
		w.Abort()
		if rec.GetType() != c.GetType() || !bytes.Equal(rec.GetFingerprint(), c.GetFingerprint()) {
			return &Result{Index: index, Err: refuse(codes.InvalidArgument,
				"request_id: %q was used for another request (%s at index %d); give each request its own ID", id, MessageType(rec.GetType()), rec.GetIndex())}
		}
		return ResultFromRecord(rec, true)
	}
	msg := payloadFor(t)
	if msg == nil {
		w.Abort()
		f.unknown(t, index)
		return &Result{Index: index}
	}
	t &^= IgnoreUnknownFlag
	res := &Result{Index: index}
	if err := proto.Unmarshal(c.GetPayload(), msg); err != nil {
		f.log.Error("undecodable command in a request", "index", index, "type", t, "err", err)
		res.Err = refuse(codes.InvalidArgument, "fsm: decode %s: %v", t, err)
	} else if res.Err = apply(w, t, msg, res); res.Err != nil {
		w.Abort()
		w = store.Write(index) // the refusal is recorded, without the command's partial effects
	} else {
		reply(w, t, msg, res)
	}
	rec := &hubpb.RequestRecord{
		RequestId: id, Fingerprint: c.GetFingerprint(), Type: c.GetType(), Index: index, AppliedAtMs: now,
		Token: res.Token, TokenAddrs: res.TokenAddrs, CaRotation: res.CARotation,
		PolicyActions: res.PolicyActions,
	}
	if res.Err != nil {
		rec.ErrorCode, rec.Error = uint32(res.Err.Code), res.Err.Msg
	}
	w.RecordRequest(rec, now-RequestTTL.Milliseconds(), MaxRequests)
	w.Commit()
	res.Request = rec
	return res
}

// reply fills in what a handler needs for its reply to a command that took
// effect.
func reply(w *state.WriteTxn, t MessageType, msg proto.Message, res *Result) {
	switch t {
	case CreateTokenType:
		c := msg.(*hubpb.CmdCreateToken)
		res.Token = w.Token(c.GetToken().GetId())
		res.TokenAddrs = c.GetHubAddrs()
	case RotateCAType:
		res.CARotation = w.Cluster(msg.(*hubpb.CmdRotateCA).GetCluster()).GetCaRotation()
	}
}

// apply applies one command to w. A command whose reply depends on the
// state before it (ApplyPolicies) fills in res; the others leave it to
// reply.
func apply(w *state.WriteTxn, t MessageType, msg proto.Message, res *Result) *Error {
	switch t {
	case SetCAType:
		if w.CA() == nil {
			w.SetCA(msg.(*hubpb.CmdSetCA).GetCa())
		}
		return nil
	case CreateTokenType:
		return applyCreateToken(w, msg.(*hubpb.CmdCreateToken))
	case RevokeTokenType:
		id := msg.(*hubpb.CmdRevokeToken).GetId()
		tok := w.Token(id)
		if tok == nil {
			return refuse(codes.NotFound, "token %q: not found", id)
		}
		tok = proto.Clone(tok).(*hubpb.Token)
		tok.Revoked = true
		w.PutToken(tok)
		return nil
	case JoinType:
		return applyJoin(w, msg.(*hubpb.CmdJoin))
	case RemoveClusterType:
		name := msg.(*hubpb.CmdRemoveCluster).GetName()
		cluster, err := federation.ParseClusterName(name)
		if err != nil {
			return refuse(codes.NotFound, "cluster %q: not a member", name)
		}
		if !w.DeleteCluster(name) {
			return refuse(codes.NotFound, "cluster %q: not a member", name)
		}
		for _, e := range w.ExportsOf(cluster) {
			// The store holds only exports whose IDs parse (PutExport,
			// Restorer.Export).
			id, _ := state.ExportIDOf(e)
			w.DeleteExport(id)
		}
		for _, b := range w.Bundles() {
			if b.GetCluster() == name {
				w.DeleteBundle(b.GetBundle().GetTrustDomain())
			}
		}
		return nil
	case PublishExportsType:
		return applyPublish(w, msg.(*hubpb.CmdPublishExports))
	case PutBundleType:
		c := msg.(*hubpb.CmdPutBundle)
		cl := w.Cluster(c.GetCluster())
		if cl == nil {
			return refuse(codes.PermissionDenied, "cluster %q: not a member", c.GetCluster())
		}
		if td := c.GetBundle().GetTrustDomain(); td != cl.GetTrustDomain() {
			return refuse(codes.PermissionDenied, "bundle.trust_domain: %q is not cluster %q's trust domain %q", td, cl.GetName(), cl.GetTrustDomain())
		}
		w.PutBundle(&hubpb.BundleRecord{Cluster: cl.GetName(), Bundle: c.GetBundle()})
		return nil
	case PutPolicyType:
		p := msg.(*hubpb.CmdPutPolicy).GetPolicy()
		if w.Policy(p.GetName()) == nil && len(w.Policies()) >= MaxPolicies {
			return refuse(codes.ResourceExhausted, "policies: at most %d", MaxPolicies)
		}
		w.PutPolicy(p)
		return nil
	case DeletePolicyType:
		name := msg.(*hubpb.CmdDeletePolicy).GetName()
		if !w.DeletePolicy(name) {
			return refuse(codes.NotFound, "policy %q: not found", name)
		}
		return nil
	case UpdateClusterEndpointType:
		c := msg.(*hubpb.CmdUpdateClusterEndpoint)
		cl := w.Cluster(c.GetCluster())
		if cl == nil {
			return refuse(codes.NotFound, "cluster %q: not a member", c.GetCluster())
		}
		if proto.Equal(cl.GetLocality(), c.GetLocality()) && slices.Equal(cl.GetGatewayAddresses(), c.GetGatewayAddresses()) {
			return nil // unchanged: no revision, no fan-out
		}
		cl = proto.Clone(cl).(*fedv1.ClusterRecord)
		cl.Locality = proto.Clone(c.GetLocality()).(*fedv1.Locality)
		cl.GatewayAddresses = slices.Clone(c.GetGatewayAddresses())
		w.PutCluster(cl)
		return nil
	case ClusterStatusType:
		c := msg.(*hubpb.CmdClusterStatus)
		cl := w.Cluster(c.GetCluster())
		if cl == nil {
			return refuse(codes.NotFound, "cluster %q: not a member", c.GetCluster())
		}
		if c.GetStatus() == "disconnected" && cl.GetLastSeenMs() > c.GetConnectedAtMs() {
			return nil // a newer stream connected since; keep its status
		}
		if c.GetStatus() == "connected" && cl.GetLastSeenMs() > c.GetNowMs() {
			return nil // an older stream's connect committed late; keep the newer one
		}
		cl = proto.Clone(cl).(*fedv1.ClusterRecord)
		cl.Status = c.GetStatus()
		if c.GetStatus() == "connected" {
			cl.LastSeenMs = c.GetNowMs()
		}
		w.PutCluster(cl)
		return nil
	case PutFederationType:
		f := msg.(*hubpb.CmdPutFederation).GetFederation()
		td := f.GetTrustDomain()
		if td == w.CA().GetTrustDomain() {
			return refuse(codes.FailedPrecondition, "federation.trust_domain: %q is the hub's own trust domain", td)
		}
		if b := w.Bundle(td); b != nil && b.GetCluster() != "" {
			return refuse(codes.FailedPrecondition, "federation.trust_domain: %q belongs to member cluster %q", td, b.GetCluster())
		}
		if w.Federation(td) == nil && len(w.Federations()) >= MaxFederations {
			return refuse(codes.ResourceExhausted, "federations: at most %d", MaxFederations)
		}
		w.PutFederation(f)
		return nil
	case DeleteFederationType:
		td := msg.(*hubpb.CmdDeleteFederation).GetTrustDomain()
		if !w.DeleteFederation(td) {
			return refuse(codes.NotFound, "federation %q: not found", td)
		}
		if b := w.Bundle(td); b != nil && b.GetCluster() == "" {
			w.DeleteBundle(td) // withdraw what was fetched
		}
		return nil
	case RotateCAType:
		name := msg.(*hubpb.CmdRotateCA).GetCluster()
		cl := w.Cluster(name)
		if cl == nil {
			return refuse(codes.NotFound, "cluster %q: not a member", name)
		}
		cl = proto.Clone(cl).(*fedv1.ClusterRecord)
		cl.CaRotation++
		w.PutCluster(cl)
		return nil
	case PutExternalBundleType:
		b := msg.(*hubpb.CmdPutExternalBundle).GetBundle()
		td := b.GetTrustDomain()
		if w.Federation(td) == nil {
			return refuse(codes.FailedPrecondition, "bundle.trust_domain: %q has no federation relationship (removed?)", td)
		}
		if old := w.Bundle(td); old != nil && proto.Equal(old.GetBundle(), b) {
			return nil // refetched, unchanged
		}
		w.PutBundle(&hubpb.BundleRecord{Bundle: b})
		return nil
	case RenewAgentCertType:
		return applyRenewAgentCert(w, msg.(*hubpb.CmdRenewAgentCert))
	case AckBundlesType:
		return applyAckBundles(w, msg.(*hubpb.CmdAckBundles))
	case RenewConnectionsType:
		return applyRenewConnections(w, msg.(*hubpb.CmdRenewConnections))
	case ReportGatewayPoliciesType:
		return applyReportGatewayPolicies(w, msg.(*hubpb.CmdReportGatewayPolicies))
	case ApplyPoliciesType:
		actions, err := applyPolicies(w, msg.(*hubpb.CmdApplyPolicies).GetPolicies())
		if err == nil {
			res.PolicyActions = actions
		}
		return err
	}
	panic(fmt.Sprintf("fsm: no apply for %s", t))
}

func applyCreateToken(w *state.WriteTxn, c *hubpb.CmdCreateToken) *Error {
	tok := c.GetToken()
	if w.Token(tok.GetId()) != nil {
		return refuse(codes.AlreadyExists, "token %q: already exists", tok.GetId())
	}
	if td := tok.GetTrustDomain(); td != "" {
		if err := checkMemberTrustDomain(w, "trust_domain", tok.GetCluster(), td); err != nil {
			return err
		}
	}
	// Prune tokens that can no longer be used, then bound the rest.
	now := tok.GetCreatedAtMs()
	live := 0
	for _, t := range w.Tokens() {
		dead := t.GetUsed() || t.GetRevoked() || t.GetExpiresAtMs() <= now
		if dead && now-t.GetExpiresAtMs() > tokenRetentionMs {
			w.DeleteToken(t.GetId())
			continue
		}
		live++
	}
	if live >= MaxTokens {
		return refuse(codes.ResourceExhausted, "tokens: at most %d kept (used, revoked and expired tokens count for 24h after they expire)", MaxTokens)
	}
	w.PutToken(tok)
	return nil
}

// checkMemberTrustDomain refuses td for cluster if it is reserved: the
// hub's own, an externally federated one, or another member's.
func checkMemberTrustDomain(w *state.WriteTxn, field, cluster, td string) *Error {
	if td == w.CA().GetTrustDomain() {
		return refuse(codes.InvalidArgument, "%s: %q is the hub's own trust domain, reserved", field, td)
	}
	if w.Federation(td) != nil {
		return refuse(codes.FailedPrecondition, "%s: %q is a federated external trust domain, reserved", field, td)
	}
	if b := w.Bundle(td); b != nil && b.GetCluster() != cluster {
		return refuse(codes.FailedPrecondition, "%s: %q is already used by cluster %q", field, td, b.GetCluster())
	}
	return nil
}

// ErrTokenRefused is the single message for every token refusal that should
// not tell an attacker which check failed beyond what an operator needs.
var errTokenRefused = errors.New("token refused")

func applyJoin(w *state.WriteTxn, c *hubpb.CmdJoin) *Error {
	tok := w.Token(c.GetTokenId())
	if tok == nil || subtle.ConstantTimeCompare(tok.GetSecretHash(), c.GetSecretHash()) != 1 {
		return refuse(codes.PermissionDenied, "%v: unknown token", errTokenRefused)
	}
	switch {
	case tok.GetRevoked():
		return refuse(codes.PermissionDenied, "%v: token %s was revoked", errTokenRefused, tok.GetId())
	case tok.GetUsed():
		return refuse(codes.PermissionDenied, "%v: token %s was already used", errTokenRefused, tok.GetId())
	case c.GetNowMs() >= tok.GetExpiresAtMs():
		return refuse(codes.PermissionDenied, "%v: token %s expired", errTokenRefused, tok.GetId())
	case tok.GetCluster() != c.GetCluster().GetName():
		return refuse(codes.PermissionDenied, "%v: token %s is bound to cluster %q, not %q", errTokenRefused, tok.GetId(), tok.GetCluster(), c.GetCluster().GetName())
	}
	name := c.GetCluster().GetName()
	td := c.GetCluster().GetTrustDomain()
	if b := c.GetBundle(); b != nil && b.GetTrustDomain() != td {
		return refuse(codes.InvalidArgument, "trust_bundle.trust_domain: %q is not the cluster's trust domain %q", b.GetTrustDomain(), td)
	}
	if bound := tok.GetTrustDomain(); bound != "" && bound != td {
		return refuse(codes.PermissionDenied, "%v: trust_bundle.trust_domain: %q, but token %s is bound to trust domain %q", errTokenRefused, td, tok.GetId(), bound)
	}
	if err := checkMemberTrustDomain(w, "trust_bundle.trust_domain", name, td); err != nil {
		return err
	}
	old := w.Cluster(name)
	if old == nil && len(w.Clusters()) >= MaxClusters {
		return refuse(codes.ResourceExhausted, "clusters: at most %d members", MaxClusters)
	}
	if old != nil && old.GetTrustDomain() != td {
		// Rejoined under a new trust domain: the old one's bundle goes.
		if b := w.Bundle(old.GetTrustDomain()); b != nil && b.GetCluster() == name {
			w.DeleteBundle(old.GetTrustDomain())
		}
	}
	tok = proto.Clone(tok).(*hubpb.Token)
	tok.Used = true
	tok.UsedPublicKeySha256 = c.GetCluster().GetAgentCertPublicKeySha256()
	w.PutToken(tok)
	cl := proto.Clone(c.GetCluster()).(*fedv1.ClusterRecord)
	cl.JoinedAtMs = c.GetNowMs()
	cl.Status = "disconnected"
	w.PutCluster(cl)
	if c.GetBundle() != nil {
		// A join brings a new CA whose sequence numbers start again:
		// acks of the old one say nothing about it.
		w.ResetBundleAcks(td)
		w.PutBundle(&hubpb.BundleRecord{Cluster: name, Bundle: c.GetBundle()})
	}
	return nil
}

// certSuperseded is the message of a refusal because the presented agent
// certificate is no longer the cluster's current one.
const certSuperseded = "certificate superseded by a later join or renewal"

func applyRenewAgentCert(w *state.WriteTxn, c *hubpb.CmdRenewAgentCert) *Error {
	cl := w.Cluster(c.GetCluster())
	if cl == nil {
		return refuse(codes.PermissionDenied, "cluster %q: not a member", c.GetCluster())
	}
	if cl.GetAgentCertSerial() != c.GetPresentedSerial() {
		return refuse(codes.FailedPrecondition, "cluster %q: %s (serial %s, current %s)", cl.GetName(), certSuperseded, c.GetPresentedSerial(), cl.GetAgentCertSerial())
	}
	cl = proto.Clone(cl).(*fedv1.ClusterRecord)
	cl.PreviousAgentCertSerial = cl.GetAgentCertSerial()
	cl.AgentCertSerial = c.GetSerial()
	cl.AgentCertPublicKeySha256 = c.GetPublicKeySha256()
	cl.AgentCertNotBeforeMs = c.GetNotBeforeMs()
	cl.AgentCertNotAfterMs = c.GetNotAfterMs()
	w.PutCluster(cl)
	return nil
}

// applyAckBundles records the bundle sequences a member acknowledged: only
// member clusters' bundles other than its own, at most the sequence the
// hub holds (an agent cannot have applied more), and only increases.
func applyAckBundles(w *state.WriteTxn, c *hubpb.CmdAckBundles) *Error {
	name := c.GetCluster()
	if w.Cluster(name) == nil {
		return refuse(codes.NotFound, "cluster %q: not a member", name)
	}
	for _, b := range c.GetBundles() {
		td := b.GetTrustDomain()
		rec := w.Bundle(td)
		if rec == nil || rec.GetCluster() == "" || rec.GetCluster() == name {
			continue
		}
		seq := min(b.GetSequenceNumber(), rec.GetBundle().GetSequenceNumber())
		if old := w.BundleAck(name, td); seq == 0 || (old != nil && old.GetSequenceNumber() >= seq) {
			continue
		}
		w.PutBundleAck(&hubpb.BundleAck{Cluster: name, TrustDomain: td, SequenceNumber: seq, AtMs: c.GetNowMs()})
	}
	return nil
}

// ConnectionHeld reports whether a lease row stands for a stream its server
// held when it last wrote (renewed, possibly expired since), rather than
// one it released: a released lease is kept, expiring at its release, to
// say when the cluster was last seen.
func ConnectionHeld(cc *hubpb.ClusterConnection) bool {
	return cc.GetExpiresMs() > cc.GetRenewedMs()
}

// applyRenewConnections makes the server's leases exactly the listed
// clusters': each member listed gets a lease until now_ms + lease_ms, and
// the server's leases on clusters not listed are released: kept, expiring
// at now_ms, as the record of when the cluster was last seen, until any
// lease is pruned a day after it expired. Clusters that are not members
// (removed while their stream closed) are skipped.
func applyRenewConnections(w *state.WriteTxn, c *hubpb.CmdRenewConnections) *Error {
	server, now, lease := c.GetServer(), c.GetNowMs(), c.GetLeaseMs()
	switch {
	case server == "":
		return refuse(codes.InvalidArgument, "server: required")
	case lease <= 0 || lease > MaxConnectionLeaseMs:
		return refuse(codes.InvalidArgument, "lease_ms: %d must be in 1..%d", lease, MaxConnectionLeaseMs)
	case len(c.GetClusters()) > MaxClusters:
		return refuse(codes.InvalidArgument, "clusters: %d, at most %d", len(c.GetClusters()), MaxClusters)
	}
	listed := make(map[string]bool, len(c.GetClusters()))
	for _, name := range c.GetClusters() {
		listed[name] = true
	}
	held := map[string]*hubpb.ClusterConnection{}
	for _, cc := range w.ConnectionsBy(server) {
		if !listed[cc.GetCluster()] {
			if ConnectionHeld(cc) {
				// Released: kept, expired as of now, so that when the
				// cluster was last seen outlives its stream.
				w.PutConnection(&hubpb.ClusterConnection{Cluster: cc.GetCluster(), Server: server, SinceMs: cc.GetSinceMs(), RenewedMs: now, ExpiresMs: now})
			}
			continue
		}
		held[cc.GetCluster()] = cc
	}
	for name := range listed {
		if w.Cluster(name) == nil {
			continue
		}
		since := now
		if old := held[name]; old != nil && old.GetExpiresMs() >= now {
			since = old.GetSinceMs()
		}
		w.PutConnection(&hubpb.ClusterConnection{Cluster: name, Server: server, SinceMs: since, RenewedMs: now, ExpiresMs: now + lease})
	}
	for _, cc := range w.Connections() {
		if now-cc.GetExpiresMs() > connectionRetentionMs {
			w.DeleteConnection(cc.GetCluster(), cc.GetServer())
		}
	}
	return nil
}

func applyPublish(w *state.WriteTxn, c *hubpb.CmdPublishExports) *Error {
	name := c.GetCluster()
	if w.Cluster(name) == nil {
		return refuse(codes.PermissionDenied, "cluster %q: not a member", name)
	}
	// The keys are checked before anything is written (the handler
	// checked them too).
	cluster, err := federation.ParseClusterName(name)
	if err != nil {
		return refuse(codes.PermissionDenied, "cluster %q: not a member", name)
	}
	deletes := make([]state.ExportID, 0, len(c.GetDeletes()))
	for i, k := range c.GetDeletes() {
		key, err := federation.ParseServiceKey(k)
		if err != nil {
			return refuse(codes.InvalidArgument, "deletes[%d]: %v", i, err)
		}
		deletes = append(deletes, state.ExportID{Cluster: cluster, Service: key})
	}
	upserts := make([]state.ExportID, 0, len(c.GetUpserts()))
	for i, svc := range c.GetUpserts() {
		key, err := state.ServiceKeyOf(svc)
		if err != nil {
			return refuse(codes.InvalidArgument, "upserts[%d]: %v", i, err)
		}
		upserts = append(upserts, state.ExportID{Cluster: cluster, Service: key})
	}
	before := w.ExportBytes(cluster)
	for _, id := range deletes {
		w.DeleteExport(id)
	}
	for i, svc := range c.GetUpserts() {
		if old := w.Export(upserts[i]); old != nil && proto.Equal(old.GetService(), svc) {
			continue // unchanged: no new revision, no fan-out
		}
		if err := w.PutExport(cluster, svc); err != nil {
			return refuse(codes.InvalidArgument, "upserts[%d]: %v", i, err)
		}
	}
	if n := len(w.ExportsOf(cluster)); n > MaxExportsPerCluster {
		return refuse(codes.ResourceExhausted, "exports: cluster %q would have %d, at most %d", name, n, MaxExportsPerCluster)
	}
	// A cluster above the quota (it was lowered) may still shrink.
	if after := w.ExportBytes(cluster); after > MaxExportBytesPerCluster && after > before {
		return refuse(codes.ResourceExhausted, "exports: cluster %q would hold %d bytes of exported services, at most %d", name, after, MaxExportBytesPerCluster)
	}
	return nil
}

// Snapshot captures an immutable view; Persist runs concurrently with Apply.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{view: f.Store().Read(), applied: f.AppliedIndex()}, nil
}

// snapshotFormat versions the snapshot stream.
const snapshotFormat = 1

type snapshot struct {
	view    *state.ReadTxn
	applied uint64
}

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	bw := bufio.NewWriterSize(sink, 1<<16)
	err := s.write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) write(w io.Writer) error {
	put := func(r *hubpb.SnapshotRecord) error {
		_, err := protodelim.MarshalOptions{MarshalOptions: proto.MarshalOptions{Deterministic: true}}.MarshalTo(w, r)
		return err
	}
	v := s.view
	if err := put(&hubpb.SnapshotRecord{Rec: &hubpb.SnapshotRecord_Header{Header: &hubpb.SnapshotHeader{
		Format: snapshotFormat, Revision: v.Revision(), TombstoneFloor: v.TombstoneFloor(), AppliedIndex: s.applied,
	}}}); err != nil {
		return err
	}
	if ca := v.CA(); ca != nil {
		if err := put(&hubpb.SnapshotRecord{Rec: &hubpb.SnapshotRecord_Ca{Ca: ca}}); err != nil {
			return err
		}
	}
	for _, t := range v.Tokens() {
		if err := put(&hubpb.SnapshotRecord{Rec: &hubpb.SnapshotRecord_Token{Token: t}}); err != nil {
			return err
		}
	}
	for _, c := range v.Clusters() {
		if err := put(&hubpb.SnapshotRecord{Rec: &hubpb.SnapshotRecord_Cluster{Cluster: c}}); err != nil {
			return err
		}
	}
	for _, e := range v.Exports() {
		if err := put(&hubpb.SnapshotRecord{Rec: &hubpb.SnapshotRecord_Export{Export: e}}); err != nil {
			return err
		}
	}
	for _, b := range v.Bundles() {
		if err := put(&hubpb.SnapshotRecord{Rec: &hubpb.SnapshotRecord_Bundle{Bundle: b}}); err != nil {
			return err
		}
	}
	for _, p := range v.Policies() {
		if err := put(&hubpb.SnapshotRecord{Rec: &hubpb.SnapshotRecord_Policy{Policy: p}}); err != nil {
			return err
		}
	}
	for _, t := range v.Tombstones() {
		if err := put(&hubpb.SnapshotRecord{Rec: &hubpb.SnapshotRecord_Tombstone{Tombstone: t}}); err != nil {
			return err
		}
	}
	for _, f := range v.Federations() {
		if err := put(&hubpb.SnapshotRecord{Rec: &hubpb.SnapshotRecord_Federation{Federation: f}}); err != nil {
			return err
		}
	}
	for _, a := range v.BundleAcks() {
		if err := put(&hubpb.SnapshotRecord{Rec: &hubpb.SnapshotRecord_BundleAck{BundleAck: a}}); err != nil {
			return err
		}
	}
	for _, c := range v.Connections() {
		if err := put(&hubpb.SnapshotRecord{Rec: &hubpb.SnapshotRecord_Connection{Connection: c}}); err != nil {
			return err
		}
	}
	for _, r := range v.Requests() {
		if err := put(&hubpb.SnapshotRecord{Rec: &hubpb.SnapshotRecord_Request{Request: r}}); err != nil {
			return err
		}
	}
	for _, g := range v.AllGatewayPolicies() {
		if err := put(&hubpb.SnapshotRecord{Rec: &hubpb.SnapshotRecord_GatewayPolicies{GatewayPolicies: g}}); err != nil {
			return err
		}
	}
	return nil
}

func (s *snapshot) Release() {}

// Restore builds a fresh store from a snapshot and swaps it in; watchers of
// the old store are woken through its Abandoned channel.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer func() { _ = rc.Close() }() // read side: nothing to flush
	br := bufio.NewReaderSize(rc, 1<<16)
	r := state.NewRestorer()
	first := true
	var applied uint64
	for {
		rec := &hubpb.SnapshotRecord{}
		err := protodelim.UnmarshalFrom(br, rec)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("fsm: restore: %w", err)
		}
		if first {
			h := rec.GetHeader()
			if h == nil {
				return errors.New("fsm: restore: snapshot does not start with a header")
			}
			if h.GetFormat() != snapshotFormat {
				return fmt.Errorf("fsm: restore: snapshot format %d, this server reads %d", h.GetFormat(), snapshotFormat)
			}
			r.Header(h.GetRevision(), h.GetTombstoneFloor())
			applied = h.GetAppliedIndex()
			first = false
			continue
		}
		switch x := rec.GetRec().(type) {
		case *hubpb.SnapshotRecord_Ca:
			r.CA(x.Ca)
		case *hubpb.SnapshotRecord_Token:
			r.Token(x.Token)
		case *hubpb.SnapshotRecord_Cluster:
			r.Cluster(x.Cluster)
		case *hubpb.SnapshotRecord_Export:
			if err := r.Export(x.Export); err != nil {
				return err
			}
		case *hubpb.SnapshotRecord_Bundle:
			r.Bundle(x.Bundle)
		case *hubpb.SnapshotRecord_Policy:
			r.Policy(x.Policy)
		case *hubpb.SnapshotRecord_Tombstone:
			if err := r.Tombstone(x.Tombstone); err != nil {
				return err
			}
		case *hubpb.SnapshotRecord_Federation:
			r.Federation(x.Federation)
		case *hubpb.SnapshotRecord_BundleAck:
			r.BundleAck(x.BundleAck)
		case *hubpb.SnapshotRecord_Connection:
			r.Connection(x.Connection)
		case *hubpb.SnapshotRecord_Request:
			r.Request(x.Request)
		case *hubpb.SnapshotRecord_GatewayPolicies:
			r.GatewayPolicies(x.GatewayPolicies)
		default:
			return fmt.Errorf("fsm: restore: unknown snapshot record %T", x)
		}
	}
	if first {
		return errors.New("fsm: restore: empty snapshot")
	}
	fresh := r.Done()
	f.mu.Lock()
	old := f.store
	f.store = fresh
	f.applied.Store(applied)
	f.mu.Unlock()
	old.Abandon()
	return nil
}
