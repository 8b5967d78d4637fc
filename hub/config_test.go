package hub

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// configNoDefault lists the Config fields DefaultConfig leaves zero on
// purpose: they identify this server or its peers, or are secrets.
var configNoDefault = map[string]bool{
	"Name":              true, // unique per server
	"DataDir":           true, // deployment-specific
	"BootstrapExpect":   true, // 0 is meaningful: join only
	"Join":              true, // peers are deployment-specific
	"EncryptKey":        true, // a secret; must be generated (meshfed hub keygen)
	"AdvertiseAddr":     true, // empty means BindAddr
	"BundlePort":        true, // 0: no https_spiffe bundle endpoint
	"BundleWebPort":     true, // 0: no https_web bundle endpoint
	"BundleWebCertFile": true, // only with BundleWebPort
	"BundleWebKeyFile":  true, // only with BundleWebPort
	"Pprof":             true, // off by default: profiles reveal internals
	"UIAnonymous":       true, // off by default: the UI needs a login
}

// validTestConfig is DefaultConfig plus the fields that have no default.
func validTestConfig(t testing.TB) Config {
	t.Helper()
	c := DefaultConfig()
	c.Name = "hub-1"
	c.DataDir = t.TempDir()
	c.BootstrapExpect = 1
	return c
}

// configErrors splits a Validate error into its parts.
func configErrors(t testing.TB, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []string{err.Error()}
	}
	var out []string
	for _, e := range j.Unwrap() {
		out = append(out, e.Error())
	}
	return out
}

func TestDefaultConfigSetsEveryField(t *testing.T) {
	c := DefaultConfig()
	v := reflect.ValueOf(c)
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		if configNoDefault[f.Name] {
			if !v.Field(i).IsZero() {
				t.Errorf("Config.%s is in configNoDefault but DefaultConfig sets it to %v; remove it from the list", f.Name, v.Field(i))
			}
			continue
		}
		if v.Field(i).IsZero() {
			t.Errorf("DefaultConfig().%s is the zero value; give it a default or add it to configNoDefault with a reason", f.Name)
		}
	}
	for name := range configNoDefault {
		if _, ok := v.Type().FieldByName(name); !ok {
			t.Errorf("configNoDefault lists %s, which Config no longer has", name)
		}
	}
}

func TestDefaultConfigValidates(t *testing.T) {
	c := DefaultConfig()
	err := c.Validate()
	if err == nil {
		t.Fatal("DefaultConfig() validates without name and data_dir")
	}
	for _, field := range []string{"name", "data_dir", "join"} {
		if !strings.Contains(err.Error(), "config "+field+":") {
			t.Errorf("DefaultConfig().Validate() = %v, want it to name %s", err, field)
		}
	}
	c = validTestConfig(t)
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig with name, data_dir and bootstrap_expect: %v", err)
	}
	c.BootstrapExpect = 0
	c.Join = []string{"10.0.0.1:7402"}
	if err := c.Validate(); err != nil {
		t.Errorf("join-only config: %v", err)
	}
	c.EncryptKey = mustGenerateEncryptKey(t)
	if err := c.Validate(); err != nil {
		t.Errorf("config with a generated encrypt key: %v", err)
	}
}

func TestConfigValidateReportsAllErrors(t *testing.T) {
	c := validTestConfig(t)
	c.GRPCPort = 0
	c.BootstrapExpect = 9
	c.BindAddr = "0.0.0.0"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted three errors")
	}
	msg := err.Error()
	for _, want := range []string{"grpc_port", "1..65535", "bootstrap_expect", "0..7", "bind", `"0.0.0.0"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("Validate() = %q, want it to contain %q", msg, want)
		}
	}
	if got := configErrors(t, err); len(got) != 3 {
		t.Errorf("Validate() reported %d errors, want 3: %q", len(got), got)
	}
}

func TestConfigValidateNamesFieldAndBound(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Config)
		field  string
		bound  string
	}{
		{"bad name", func(c *Config) { c.Name = "Hub_1" }, "name", "63"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "data_dir", "required"},
		{"bind not an IP", func(c *Config) { c.BindAddr = "localhost" }, "bind", "IP"},
		{"bind unspecified without advertise", func(c *Config) { c.BindAddr = "::" }, "advertise", "specific"},
		{"advertise unspecified", func(c *Config) { c.BindAddr = "0.0.0.0"; c.AdvertiseAddr = "0.0.0.0" }, "advertise", "specific"},
		{"raft port high", func(c *Config) { c.RaftPort = 65536 }, "raft_port", "1..65535"},
		{"gossip port negative", func(c *Config) { c.GossipPort = -1 }, "gossip_port", "1..65535"},
		{"duplicate port", func(c *Config) { c.HTTPPort = c.GRPCPort }, "http_port", "grpc_port"},
		{"bootstrap negative", func(c *Config) { c.BootstrapExpect = -1 }, "bootstrap_expect", "0..7"},
		{"nothing to join", func(c *Config) { c.BootstrapExpect = 0 }, "join", "bootstrap_expect"},
		{"too many joins", func(c *Config) { c.Join = make([]string, MaxJoin+1); fillJoin(c.Join) }, "join", "16"},
		{"join not host:port", func(c *Config) { c.Join = []string{"10.0.0.1:7402", "10.0.0.2"} }, "join[1]", "host:port"},
		{"encrypt key not base64", func(c *Config) { c.EncryptKey = "not base64!" }, "encrypt_key", "base64"},
		{"encrypt key short", func(c *Config) { c.EncryptKey = "AAAA" }, "encrypt_key", "32"},
		{"trust domain", func(c *Config) { c.TrustDomain = "" }, "trust_domain", ""},
		{"token ttl zero", func(c *Config) { c.TokenTTL = 0 }, "token_ttl", "positive"},
		{"token ttl above max", func(c *Config) { c.TokenTTL = 2 * c.MaxTokenTTL }, "token_ttl", "max_token_ttl"},
		{"agent cert ttl", func(c *Config) { c.AgentCertTTL = -time.Second }, "agent_cert_ttl", "30s..8760h0m0s"},
		{"agent cert ttl short", func(c *Config) { c.AgentCertTTL = 29 * time.Second }, "agent_cert_ttl", "30s..8760h0m0s"},
		{"server cert ttl short", func(c *Config) { c.ServerCertTTL = 29 * time.Second }, "server_cert_ttl", "30s..8760h0m0s"},
		{"server cert ttl long", func(c *Config) { c.ServerCertTTL = MaxCertTTL + time.Second }, "server_cert_ttl", "30s..8760h0m0s"},
		{"apply timeout", func(c *Config) { c.ApplyTimeout = 0 }, "apply_timeout", "positive"},
		{"lease above heartbeat", func(c *Config) { c.LeaderLeaseTimeout = 2 * c.HeartbeatTimeout }, "leader_lease_timeout", "heartbeat_timeout"},
		{"snapshot threshold", func(c *Config) { c.SnapshotThreshold = 0 }, "snapshot_threshold", "positive"},
		{"gossip profile", func(c *Config) { c.GossipProfile = "wan" }, "gossip_profile", "lan or local"},
		{"join rate", func(c *Config) { c.JoinRate = 0 }, "join_rate", "(0, 1e6]"},
		{"join burst", func(c *Config) { c.JoinBurst = 0 }, "join_burst", "1..1000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validTestConfig(t)
			tt.mutate(&c)
			errs := configErrors(t, c.Validate())
			if len(errs) != 1 {
				t.Fatalf("Validate() reported %d errors, want 1: %q", len(errs), errs)
			}
			if !strings.Contains(errs[0], "config "+tt.field+":") || !strings.Contains(errs[0], tt.bound) {
				t.Errorf("Validate() = %q, want field %q and %q", errs[0], tt.field, tt.bound)
			}
		})
	}
}

func fillJoin(addrs []string) {
	for i := range addrs {
		addrs[i] = "10.0.0.1:7402"
	}
}

func TestConfigValidateRejectsDuplicatePorts(t *testing.T) {
	c := validTestConfig(t)
	c.RaftPort = c.GRPCPort
	c.GossipPort = c.GRPCPort
	errs := configErrors(t, c.Validate())
	if len(errs) != 2 {
		t.Fatalf("Validate() = %q, want two duplicate-port errors", errs)
	}
	// Each later port is reported as a duplicate of an earlier one.
	for i, field := range []string{"raft_port", "gossip_port"} {
		if !strings.Contains(errs[i], "config "+field+":") || !strings.Contains(errs[i], "7400 is also") {
			t.Errorf("error %d = %q, want %s named as a duplicate", i, errs[i], field)
		}
	}
	if !strings.Contains(errs[0], "grpc_port") {
		t.Errorf("error 0 = %q, want raft_port named as a duplicate of grpc_port", errs[0])
	}
}

// TestConfigValidateMatchesRaftBounds checks that Validate catches the Raft
// timing settings raft.ValidateConfig would reject later in New, so the
// operator gets a field name and bound instead of a raft error at start.
func TestConfigValidateMatchesRaftBounds(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Config)
		field  string
	}{
		{"election below heartbeat", func(c *Config) {
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, 500*time.Millisecond, 500*time.Millisecond
		}, "election_timeout"},
		{"heartbeat below 5ms", func(c *Config) {
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Millisecond, time.Second, time.Millisecond
		}, "heartbeat_timeout"},
		{"snapshot interval below 5ms", func(c *Config) { c.SnapshotInterval = time.Millisecond }, "snapshot_interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validTestConfig(t)
			tt.mutate(&c)
			// The same mapping as Server.setupRaft.
			rc := raft.DefaultConfig()
			rc.LocalID = raft.ServerID(c.Name)
			rc.HeartbeatTimeout = c.HeartbeatTimeout
			rc.ElectionTimeout = c.ElectionTimeout
			rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
			rc.SnapshotInterval = c.SnapshotInterval
			rc.SnapshotThreshold = c.SnapshotThreshold
			rc.TrailingLogs = c.TrailingLogs
			rerr := raft.ValidateConfig(rc)
			if rerr == nil {
				t.Fatalf("test case is not a raft error")
			}
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), "config "+tt.field+":") {
				t.Errorf("Validate() = %v; raft will reject this config (%v), want an error naming %s", err, rerr, tt.field)
			}
		})
	}
}

func mustGenerateEncryptKey(t testing.TB) string {
	t.Helper()
	k, err := GenerateEncryptKey()
	if err != nil {
		t.Fatalf("GenerateEncryptKey: %v", err)
	}
	return k
}

func TestGenerateEncryptKeyDecodes(t *testing.T) {
	a, b := mustGenerateEncryptKey(t), mustGenerateEncryptKey(t)
	if a == b {
		t.Error("two generated keys are equal")
	}
	k, err := DecodeEncryptKey(a)
	if err != nil {
		t.Fatalf("DecodeEncryptKey(generated): %v", err)
	}
	if len(k) != EncryptKeySize || EncryptKeySize != 32 {
		t.Errorf("decoded %d bytes, want 32", len(k))
	}
}

func TestDecodeEncryptKeyErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"", "0 bytes, want 32"},
		{"AAAAAAAAAAAAAAAAAAAAAA==", "16 bytes, want 32"},                                // 16 bytes
		{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "48 bytes"}, // 48 bytes
		{"not base64!", "not base64"},
		{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "not base64"}, // missing padding
	}
	for _, tt := range tests {
		k, err := DecodeEncryptKey(tt.in)
		if err == nil {
			t.Errorf("DecodeEncryptKey(%q) = %d bytes, want an error", tt.in, len(k))
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("DecodeEncryptKey(%q) = %v, want %q", tt.in, err, tt.want)
		}
		if k != nil {
			t.Errorf("DecodeEncryptKey(%q) returned a key with the error", tt.in)
		}
	}
	good := strings.Repeat("A", 43) + "="
	if k, err := DecodeEncryptKey(good); err != nil || len(k) != 32 {
		t.Errorf("DecodeEncryptKey(32 zero bytes) = %d bytes, %v", len(k), err)
	}
}
