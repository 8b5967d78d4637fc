package federation

import (
	"slices"
	"strconv"
)

// CapabilityVersion is the capability version of this build. Hub, agent and
// gateway send it at join and at the start of every stream.
//
// It only ever increases: bump it by one whenever a change to the API in
// subpackage v1 or to its semantics is something a peer must know about,
// and never reuse or lower a number. A peer reading a higher number than its
// own must assume only what its own version means; behaviour that a peer may
// or may not support is negotiated through feature names (see Negotiate),
// not inferred from the number.
const CapabilityVersion uint32 = 1

// MinCapabilityVersion is the lowest peer CapabilityVersion this build
// accepts; see CheckPeer. It is raised only when support for old peers is
// deliberately dropped, and never above CapabilityVersion.
const MinCapabilityVersion uint32 = 1

// Feature names exchanged at join and stream start. A name, once published,
// keeps its meaning forever; a changed behaviour gets a new name.
const (
	// FeatureSyncResume: the peer can resume a sync stream from the last
	// index it acknowledged instead of starting from a full snapshot.
	FeatureSyncResume = "sync.resume"
	// FeatureSyncAck: the peer acknowledges each sync update it has
	// applied.
	FeatureSyncAck = "sync.ack"
	// FeatureSyncHeartbeat: the hub sends SyncHeartbeat messages on the
	// Sync stream while the serving server is healthy, every
	// SyncHelloResponse.heartbeat_interval_ms; the agent counts itself
	// connected only while it has heard from the hub within HeartbeatMisses
	// intervals.
	FeatureSyncHeartbeat = "sync.heartbeat"
	// FeatureSyncTraffic: the hub takes TrafficSummary messages on the
	// Sync stream (the gateways' traffic per destination cluster, for the
	// web UI); an agent sends them only when the hub lists this feature.
	FeatureSyncTraffic = "sync.traffic"
)

// HeartbeatMisses is how many heartbeat intervals an agent waits without
// hearing from its hub server before it counts itself disconnected and
// reconnects (to another server, where one is healthy).
const HeartbeatMisses = 3

// Machine-readable refusals. The hub attaches a
// google.rpc.ErrorInfo{Domain: ErrorDomain, Reason: ...} to the gRPC
// status; peers branch on the reason, never on the message.
const (
	// ErrorDomain is the ErrorInfo domain of meshfed's reasons.
	ErrorDomain = "meshfed.io"
	// ReasonClusterRemoved: the calling cluster is not a member of the
	// federation (an operator removed it, or it never joined). Its agent
	// stops and removes what it imported.
	ReasonClusterRemoved = "CLUSTER_REMOVED"
	// ReasonSlowConsumer: the hub ended a Sync stream whose agent did not
	// read a message within the hub's send timeout. The agent reconnects
	// and resumes from its revision.
	ReasonSlowConsumer = "SLOW_CONSUMER"
)

// Features is an immutable set of feature names, typically the result of
// Negotiate. The zero value is the empty set. Features values may be shared
// between goroutines.
type Features struct {
	names []string // sorted, no duplicates
}

// NewFeatures returns the set of the given names. Duplicates are ignored.
// names is not retained.
func NewFeatures(names ...string) Features {
	s := slices.Clone(names)
	slices.Sort(s)
	return Features{names: slices.Compact(s)}
}

// Has reports whether name is in f.
func (f Features) Has(name string) bool {
	_, ok := slices.BinarySearch(f.names, name)
	return ok
}

// Names returns the names in f in sorted order, in a new slice the caller
// owns. It returns nil for the empty set.
func (f Features) Names() []string {
	return slices.Clone(f.names)
}

// Negotiate returns the features both sides support: the sorted, duplicate
// free intersection of local and remote, in a new slice the caller owns, or
// nil if they share none. Unknown names are not an error; a name only one
// side knows is simply not in the result. The arguments are not modified.
func Negotiate(local, remote []string) []string {
	l := NewFeatures(local...)
	var out []string
	for _, name := range NewFeatures(remote...).names {
		if l.Has(name) {
			out = append(out, name)
		}
	}
	return out
}

// CheckPeer validates the CapabilityVersion a peer declared. It returns a
// *FieldError on field "capabilities.version" if version is below
// MinCapabilityVersion, and nil otherwise; versions above CapabilityVersion
// are accepted (see CapabilityVersion).
func CheckPeer(version uint32) error {
	if version < MinCapabilityVersion {
		return invalid("capabilities.version", strconv.FormatUint(uint64(version), 10),
			"must be at least "+strconv.FormatUint(uint64(MinCapabilityVersion), 10))
	}
	return nil
}
