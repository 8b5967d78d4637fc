// Package fsm is the hub's Raft finite state machine: the numbered command
// protocol, deterministic Apply over the state store, and snapshots.
//
// Commands are a persisted protocol. Each is one MessageType byte followed by
// a protobuf payload from hub/internal/hubpb. Numbers are explicit and
// append-only: never renumber, never reuse. A type with IgnoreUnknownFlag set
// may be skipped by an older server that does not know it; any other unknown
// type stops the server (panic), because applying the log without it would
// diverge.
package fsm

import (
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/hub/internal/hubpb"
)

// MessageType identifies a Raft command.
type MessageType uint8

// Command types. Append only.
const (
	SetCAType             MessageType = 0
	CreateTokenType       MessageType = 1
	RevokeTokenType       MessageType = 2
	JoinType              MessageType = 3
	RemoveClusterType     MessageType = 4
	PublishExportsType    MessageType = 5
	PutBundleType         MessageType = 6
	PutPolicyType         MessageType = 7
	DeletePolicyType      MessageType = 8
	ClusterStatusType     MessageType = 9
	PutFederationType     MessageType = 10
	DeleteFederationType  MessageType = 11
	RotateCAType          MessageType = 12
	PutExternalBundleType MessageType = 13
	RenewAgentCertType    MessageType = 14
	// UpdateClusterEndpointType: a member's gateway addresses and locality
	// as its agent states them at the start of a Sync session.
	UpdateClusterEndpointType MessageType = 15
	// RequestType wraps another command with the ID of the request it
	// answers (hubpb.CmdRequest): the FSM applies it once per request ID
	// and answers a repeat with the recorded result.
	RequestType MessageType = 16
	// RenewConnectionsType: one hub server's leases on the Sync streams it
	// holds, renewed together; replaces ClusterStatus (9), which new
	// servers no longer propose.
	RenewConnectionsType MessageType = 17
	// AckBundlesType: bundle sequences a member's agent acknowledged
	// (recorded when they increase; not streamed).
	AckBundlesType MessageType = 18
	// ApplyPoliciesType: a batch of traffic policies created or replaced
	// all or nothing, one policy per host (applyPolicies).
	ApplyPoliciesType MessageType = 19
	// ReportGatewayPoliciesType: the policy statuses of a member's
	// gateway replicas, as its agent forwarded them (not streamed).
	ReportGatewayPoliciesType MessageType = 20
)

// IgnoreUnknownFlag marks a command an older server may skip.
const IgnoreUnknownFlag MessageType = 128

// ProtocolVersion is the command protocol this build applies: every type
// whose MinVersion is at most it. Servers gossip it, and a leader proposes
// a command only when every voter's version reaches the command's
// MinVersion, so that no server meets a command it cannot apply during a
// rolling upgrade. A new command type gets the next version: bump this
// and return it from MinVersion. Version 1 is what every hub server that
// ever gossiped a version applies (types 0 to 13); version 2 adds
// RenewAgentCert (14), version 3 UpdateClusterEndpoint (15), version 4
// Request (16), RenewConnections (17) and AckBundles (18), version 5
// ApplyPolicies (19) and ReportGatewayPolicies (20), which ship together.
const ProtocolVersion = 5

// MinVersion is the protocol version that introduced t; for a type this
// build does not know, a version no server reaches.
func (t MessageType) MinVersion() int {
	switch t &^ IgnoreUnknownFlag {
	case SetCAType, CreateTokenType, RevokeTokenType, JoinType, RemoveClusterType,
		PublishExportsType, PutBundleType, PutPolicyType, DeletePolicyType,
		ClusterStatusType, PutFederationType, DeleteFederationType, RotateCAType,
		PutExternalBundleType:
		return 1
	case RenewAgentCertType:
		return 2
	case UpdateClusterEndpointType:
		return 3
	case RequestType, RenewConnectionsType, AckBundlesType:
		return 4
	case ApplyPoliciesType, ReportGatewayPoliciesType:
		return 5
	}
	return math.MaxInt
}

func (t MessageType) String() string {
	switch t &^ IgnoreUnknownFlag {
	case SetCAType:
		return "SetCA"
	case CreateTokenType:
		return "CreateToken"
	case RevokeTokenType:
		return "RevokeToken"
	case JoinType:
		return "Join"
	case RemoveClusterType:
		return "RemoveCluster"
	case PublishExportsType:
		return "PublishExports"
	case PutBundleType:
		return "PutBundle"
	case PutPolicyType:
		return "PutPolicy"
	case DeletePolicyType:
		return "DeletePolicy"
	case ClusterStatusType:
		return "ClusterStatus"
	case PutFederationType:
		return "PutFederation"
	case DeleteFederationType:
		return "DeleteFederation"
	case RotateCAType:
		return "RotateCA"
	case PutExternalBundleType:
		return "PutExternalBundle"
	case RenewAgentCertType:
		return "RenewAgentCert"
	case UpdateClusterEndpointType:
		return "UpdateClusterEndpoint"
	case AckBundlesType:
		return "AckBundles"
	case RenewConnectionsType:
		return "RenewConnections"
	case RequestType:
		return "Request"
	case ApplyPoliciesType:
		return "ApplyPolicies"
	case ReportGatewayPoliciesType:
		return "ReportGatewayPolicies"
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// Encode frames a command.
func Encode(t MessageType, msg proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode %s: %w", t, err)
	}
	return append([]byte{byte(t)}, b...), nil
}

// EncodeRequest wraps an encoded command (type byte and payload, as Encode
// returns it) in a Request command carrying the request's ID, fingerprint
// and time.
func EncodeRequest(id string, fingerprint []byte, nowMs int64, cmd []byte) ([]byte, error) {
	if len(cmd) == 0 {
		return nil, fmt.Errorf("fsm: encode %s: empty command", RequestType)
	}
	return Encode(RequestType, &hubpb.CmdRequest{
		RequestId: id, Fingerprint: fingerprint, NowMs: nowMs, Type: uint32(cmd[0]), Payload: cmd[1:],
	})
}

// Unwrap returns the command a Request command wraps, encoded as Encode
// would, or cmd itself when it is not a Request.
func Unwrap(cmd []byte) ([]byte, error) {
	if len(cmd) == 0 || MessageType(cmd[0])&^IgnoreUnknownFlag != RequestType {
		return cmd, nil
	}
	var r hubpb.CmdRequest
	if err := proto.Unmarshal(cmd[1:], &r); err != nil {
		return nil, fmt.Errorf("fsm: decode %s: %w", RequestType, err)
	}
	if r.GetType() > math.MaxUint8 {
		return nil, fmt.Errorf("fsm: decode %s: type %d is not a command type", RequestType, r.GetType())
	}
	return append([]byte{byte(r.GetType())}, r.GetPayload()...), nil
}

// payloadFor returns an empty payload message for a known command type.
func payloadFor(t MessageType) proto.Message {
	switch t &^ IgnoreUnknownFlag {
	case SetCAType:
		return &hubpb.CmdSetCA{}
	case CreateTokenType:
		return &hubpb.CmdCreateToken{}
	case RevokeTokenType:
		return &hubpb.CmdRevokeToken{}
	case JoinType:
		return &hubpb.CmdJoin{}
	case RemoveClusterType:
		return &hubpb.CmdRemoveCluster{}
	case PublishExportsType:
		return &hubpb.CmdPublishExports{}
	case PutBundleType:
		return &hubpb.CmdPutBundle{}
	case PutPolicyType:
		return &hubpb.CmdPutPolicy{}
	case DeletePolicyType:
		return &hubpb.CmdDeletePolicy{}
	case ClusterStatusType:
		return &hubpb.CmdClusterStatus{}
	case PutFederationType:
		return &hubpb.CmdPutFederation{}
	case DeleteFederationType:
		return &hubpb.CmdDeleteFederation{}
	case RotateCAType:
		return &hubpb.CmdRotateCA{}
	case PutExternalBundleType:
		return &hubpb.CmdPutExternalBundle{}
	case RenewAgentCertType:
		return &hubpb.CmdRenewAgentCert{}
	case UpdateClusterEndpointType:
		return &hubpb.CmdUpdateClusterEndpoint{}
	case AckBundlesType:
		return &hubpb.CmdAckBundles{}
	case RenewConnectionsType:
		return &hubpb.CmdRenewConnections{}
	case RequestType:
		return &hubpb.CmdRequest{}
	case ApplyPoliciesType:
		return &hubpb.CmdApplyPolicies{}
	case ReportGatewayPoliciesType:
		return &hubpb.CmdReportGatewayPolicies{}
	}
	return nil
}

// Decode parses a framed command. ok is false for an unknown type.
func Decode(b []byte) (t MessageType, msg proto.Message, ok bool, err error) {
	if len(b) == 0 {
		return 0, nil, false, fmt.Errorf("fsm: empty command")
	}
	t = MessageType(b[0])
	msg = payloadFor(t)
	if msg == nil {
		return t, nil, false, nil
	}
	if err := proto.Unmarshal(b[1:], msg); err != nil {
		return t, nil, true, fmt.Errorf("fsm: decode %s: %w", t, err)
	}
	return t, msg, true, nil
}
