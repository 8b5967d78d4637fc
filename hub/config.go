package hub

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/meshfed/meshfed/federation"
)

// Config is one hub server's configuration. Build it with DefaultConfig, set
// fields, then New validates it.
type Config struct {
	// Name is this server's unique name: its Raft ID and memberlist node name.
	Name string
	// DataDir holds the Raft log, snapshots and admin.yaml.
	DataDir string
	// BindAddr is the IP every port binds to.
	BindAddr string
	// AdvertiseAddr is the IP other servers, agents and operators use to
	// reach this one (in gossip, Raft, join tokens and admin.yaml). Empty
	// means BindAddr, which must then be a specific address.
	AdvertiseAddr string
	GRPCPort      int
	RaftPort      int
	GossipPort    int
	HTTPPort      int
	// BootstrapExpect is the number of servers to wait for before the first
	// election. 0 means join an existing cluster only.
	BootstrapExpect int
	// Join lists host:gossip-port addresses of other servers to join.
	Join []string
	// EncryptKey authenticates and encrypts Raft and gossip traffic between
	// servers; base64 of 32 random bytes (meshfed hub keygen). Empty disables
	// it, with a loud warning.
	EncryptKey string
	// TrustDomain is the hub's own SPIFFE trust domain (control-plane identities).
	TrustDomain string

	// TokenTTL is the default join token lifetime; MaxTokenTTL bounds requests.
	TokenTTL    time.Duration
	MaxTokenTTL time.Duration
	// AgentCertTTL is the lifetime of an agent's client certificate, issued
	// at join and renewed by the agent at half-life (Sync.Renew); at least
	// MinAgentCertTTL.
	AgentCertTTL time.Duration
	// ServerCertTTL is the lifetime of each server's own certificate from
	// the hub CA; it is renewed at half-life.
	ServerCertTTL time.Duration
	// DeadServerGrace is how long a failed server stays in the Raft
	// configuration before the leader removes it (autopilot).
	DeadServerGrace time.Duration
	// ConsistentReadTimeout bounds how long a server waits to catch up to the
	// leader's commit index before answering Unavailable.
	ConsistentReadTimeout time.Duration
	// ApplyTimeout bounds one Raft write.
	ApplyTimeout time.Duration

	// Raft timing and log compaction.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// CommitTimeout is how long the leader waits, with no new writes, before
	// telling followers the commit index. It bounds how late followers apply
	// (and so serve) a write: Sync fan-out from followers and consistent
	// reads on followers wait for it.
	CommitTimeout     time.Duration
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64

	// BundlePort serves SPIFFE bundle endpoints under the https_spiffe
	// profile (0 disables). BundleWebPort serves them under https_web with
	// the certificate and key in BundleWebCertFile and BundleWebKeyFile.
	BundlePort        int
	BundleWebPort     int
	BundleWebCertFile string
	BundleWebKeyFile  string

	// GossipProfile is "lan" (memberlist LAN defaults) or "local" (loopback,
	// faster failure detection).
	GossipProfile string

	// UIAnonymous serves the web UI (/ui/) without a login: anyone who
	// reaches the HTTP port sees the federation's topology, services and
	// trust. Off by default; a warning is logged at start when on.
	UIAnonymous bool

	// Pprof serves net/http/pprof under /debug/pprof/ on the HTTP port.
	// Off by default: profiles reveal internals and cost CPU.
	Pprof bool

	// protocol overrides the command protocol this server gossips and
	// requires (tests of rolling upgrades).
	protocol protocolOverride

	// walSegmentSize overrides raft-wal's segment size (tests use small
	// segments so that log compaction really drops entries).
	walSegmentSize int

	// SyncSendTimeout bounds one message sent on a Sync stream. An agent
	// that stops reading fills its flow-control window and blocks the send;
	// after this long its stream is ended (Unavailable, reason
	// SLOW_CONSUMER) and it resumes from its revision when it reconnects.
	// Other streams are never held up by it.
	SyncSendTimeout time.Duration
	// SyncHeartbeatInterval is how often a Sync stream carries a heartbeat
	// while this server is healthy (a ready leader, or a follower that heard
	// from the leader within HeartbeatTimeout). Agents count themselves
	// connected for federation.HeartbeatMisses intervals after they last
	// heard from the server.
	SyncHeartbeatInterval time.Duration
	// ConnectionLease is how long a cluster counts as connected (Admin
	// ListClusters, DescribeCluster) after the server holding its Sync
	// stream last renewed the lease. Each server renews the leases of all
	// its streams in one Raft write every ConnectionLease/3, and releases a
	// lease at once when its stream ends; a crashed server's leases lapse
	// within ConnectionLease.
	ConnectionLease time.Duration

	// hooks let tests reach into the write path.
	hooks testHooks

	// JoinRate and JoinBurst are the token bucket per peer IP for Join
	// calls (unauthenticated): JoinRate calls a second, JoinBurst at once.
	// More are answered ResourceExhausted.
	JoinRate  float64
	JoinBurst int
}

// DefaultConfig returns a configuration with every tunable set.
func DefaultConfig() Config {
	return Config{
		BindAddr:              "127.0.0.1",
		GRPCPort:              7400,
		RaftPort:              7401,
		GossipPort:            7402,
		HTTPPort:              7403,
		TrustDomain:           "hub.meshfed",
		TokenTTL:              15 * time.Minute,
		MaxTokenTTL:           24 * time.Hour,
		AgentCertTTL:          30 * 24 * time.Hour,
		ServerCertTTL:         30 * 24 * time.Hour,
		DeadServerGrace:       30 * time.Second,
		ConsistentReadTimeout: 2 * time.Second,
		ApplyTimeout:          10 * time.Second,
		HeartbeatTimeout:      1000 * time.Millisecond,
		ElectionTimeout:       1000 * time.Millisecond,
		LeaderLeaseTimeout:    500 * time.Millisecond,
		CommitTimeout:         5 * time.Millisecond,
		SnapshotInterval:      2 * time.Minute,
		SnapshotThreshold:     8192,
		TrailingLogs:          10240,
		GossipProfile:         "lan",
		JoinRate:              10,
		JoinBurst:             32,
		SyncSendTimeout:       10 * time.Second,
		SyncHeartbeatInterval: 2 * time.Second,
		ConnectionLease:       15 * time.Second,
	}
}

// Limits on hub inputs.
const (
	MaxServers = 7
	MaxJoin    = 16
	// MinCertTTL and MaxCertTTL bound the server and agent certificate
	// lifetimes.
	MinCertTTL = 30 * time.Second
	MaxCertTTL = 365 * 24 * time.Hour
	// Bounds of the Sync stream's timing (SyncSendTimeout,
	// SyncHeartbeatInterval, ConnectionLease).
	minSyncTiming = 10 * time.Millisecond
	maxSyncTiming = 10 * time.Minute
)

// Validate reports every problem at once, each naming the field and bound.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("hub: config %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if _, err := federation.ParseClusterName(c.Name); err != nil {
		bad("name", "%q must be a lowercase DNS label of at most 63 characters", c.Name)
	}
	if c.DataDir == "" {
		bad("data_dir", "required")
	}
	if ip := net.ParseIP(c.BindAddr); ip == nil {
		bad("bind", "%q is not an IP address", c.BindAddr)
	} else if ip.IsUnspecified() && c.AdvertiseAddr == "" {
		bad("advertise", "required when bind is %q: peers need a specific address", c.BindAddr)
	}
	if c.AdvertiseAddr != "" {
		if ip := net.ParseIP(c.AdvertiseAddr); ip == nil || ip.IsUnspecified() {
			bad("advertise", "%q must be a specific IP address", c.AdvertiseAddr)
		}
	}
	ports := map[int]string{}
	for _, p := range []struct {
		field string
		v     int
	}{{"grpc_port", c.GRPCPort}, {"raft_port", c.RaftPort}, {"gossip_port", c.GossipPort}, {"http_port", c.HTTPPort}} {
		if p.v < 1 || p.v > 65535 {
			bad(p.field, "%d must be in 1..65535", p.v)
			continue
		}
		if other, dup := ports[p.v]; dup {
			bad(p.field, "%d is also %s", p.v, other)
		}
		ports[p.v] = p.field
	}
	for _, p := range []struct {
		field string
		v     int
	}{{"bundle_port", c.BundlePort}, {"bundle_web_port", c.BundleWebPort}} {
		if p.v == 0 {
			continue
		}
		if p.v < 1 || p.v > 65535 {
			bad(p.field, "%d must be in 1..65535 (0 disables)", p.v)
		} else if other, dup := ports[p.v]; dup {
			bad(p.field, "%d is also %s", p.v, other)
		} else {
			ports[p.v] = p.field
		}
	}
	if c.BundleWebPort != 0 && (c.BundleWebCertFile == "" || c.BundleWebKeyFile == "") {
		bad("bundle_web_cert_file", "bundle_web_cert_file and bundle_web_key_file are required with bundle_web_port")
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect > MaxServers {
		bad("bootstrap_expect", "%d must be in 0..%d", c.BootstrapExpect, MaxServers)
	}
	if c.BootstrapExpect == 0 && len(c.Join) == 0 {
		bad("join", "required when bootstrap_expect is 0 (nothing to join)")
	}
	if len(c.Join) > MaxJoin {
		bad("join", "%d addresses, at most %d", len(c.Join), MaxJoin)
	}
	for i, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			bad(fmt.Sprintf("join[%d]", i), "%q must be host:port", j)
		}
	}
	if c.EncryptKey != "" {
		if _, err := DecodeEncryptKey(c.EncryptKey); err != nil {
			bad("encrypt_key", "%v", err)
		}
	}
	if _, err := federation.ParseTrustDomain(c.TrustDomain); err != nil {
		bad("trust_domain", "%v", err)
	}
	positive := []struct {
		field string
		v     time.Duration
	}{
		{"token_ttl", c.TokenTTL}, {"max_token_ttl", c.MaxTokenTTL},
		{"dead_server_grace", c.DeadServerGrace}, {"consistent_read_timeout", c.ConsistentReadTimeout},
		{"apply_timeout", c.ApplyTimeout}, {"heartbeat_timeout", c.HeartbeatTimeout},
		{"election_timeout", c.ElectionTimeout}, {"leader_lease_timeout", c.LeaderLeaseTimeout},
		{"commit_timeout", c.CommitTimeout},
		{"snapshot_interval", c.SnapshotInterval},
	}
	for _, p := range positive {
		if p.v <= 0 {
			bad(p.field, "%v must be positive", p.v)
		}
	}
	for _, p := range []struct {
		field string
		v     time.Duration
	}{{"agent_cert_ttl", c.AgentCertTTL}, {"server_cert_ttl", c.ServerCertTTL}} {
		if p.v < MinCertTTL || p.v > MaxCertTTL {
			bad(p.field, "%v must be in %v..%v", p.v, MinCertTTL, MaxCertTTL)
		}
	}
	for _, p := range []struct {
		field string
		v     time.Duration
	}{{"sync_send_timeout", c.SyncSendTimeout}, {"sync_heartbeat_interval", c.SyncHeartbeatInterval}, {"connection_lease", c.ConnectionLease}} {
		if p.v < minSyncTiming || p.v > maxSyncTiming {
			bad(p.field, "%v must be in %v..%v", p.v, minSyncTiming, maxSyncTiming)
		}
	}
	if c.TokenTTL > c.MaxTokenTTL {
		bad("token_ttl", "%v exceeds max_token_ttl %v", c.TokenTTL, c.MaxTokenTTL)
	}
	for _, p := range []struct {
		field string
		v     time.Duration
	}{
		{"heartbeat_timeout", c.HeartbeatTimeout}, {"election_timeout", c.ElectionTimeout},
		{"leader_lease_timeout", c.LeaderLeaseTimeout}, {"snapshot_interval", c.SnapshotInterval},
	} {
		if p.v > 0 && p.v < minRaftTimeout {
			bad(p.field, "%v must be at least %v", p.v, minRaftTimeout)
		}
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		bad("election_timeout", "%v must be at least heartbeat_timeout %v", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		bad("leader_lease_timeout", "%v must not exceed heartbeat_timeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.SnapshotThreshold == 0 {
		bad("snapshot_threshold", "must be positive")
	}
	if c.JoinRate <= 0 || c.JoinRate > 1e6 {
		bad("join_rate", "%g must be in (0, 1e6] calls a second", c.JoinRate)
	}
	if c.JoinBurst < 1 || c.JoinBurst > 1e6 {
		bad("join_burst", "%d must be in 1..1000000", c.JoinBurst)
	}
	if c.GossipProfile != "lan" && c.GossipProfile != "local" {
		bad("gossip_profile", "%q must be lan or local", c.GossipProfile)
	}
	return errors.Join(errs...)
}

// minRaftTimeout is the smallest timing hashicorp/raft accepts.
const minRaftTimeout = 5 * time.Millisecond

// EncryptKeySize is the size of the shared server key in bytes.
const EncryptKeySize = 32

// DecodeEncryptKey decodes a base64 shared key.
func DecodeEncryptKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not base64: %w", err)
	}
	if len(k) != EncryptKeySize {
		return nil, fmt.Errorf("%d bytes, want %d (use meshfed hub keygen)", len(k), EncryptKeySize)
	}
	return k, nil
}
