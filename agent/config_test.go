package agent

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation"
)

// configNoDefault lists the Config fields DefaultConfig leaves zero, and
// why zero is right for them.
var configNoDefault = map[string]string{
	"Cluster":            "required: the operator names the cluster",
	"Locality":           "stated at join; afterwards zero means the stored one",
	"TrustDomain":        "zero means <cluster>.meshfed.local",
	"DataDir":            "required: where the agent keeps its state",
	"SourcePath":         "the file source's file, required with it",
	"Kubeconfig":         "empty means in-cluster config",
	"KubeConfig":         "a REST config, for tests",
	"GatewayAddress":     "optional fallback while no gateway pod is ready",
	"GatewayAddresses":   "optional: where remote clusters reach the gateways",
	"GatewayIngressBind": "empty means all addresses",
	"HubAddresses":       "optional: the token's and credentials' addresses are used",
	"DNSAddr":            "empty disables the DNS server",
	"MetricsAddr":        "empty: /metrics only on HTTPAddr",
	"ClusterSetIPs":      "zero: the file source's imports get no ClusterSetIP",
	"Log":                "nil discards logs",
}

// DefaultConfig sets every field but those listed, each with a reason.
func TestDefaultConfigSetsEveryFieldButTheListed(t *testing.T) {
	v := reflect.ValueOf(DefaultConfig())
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		_, listed := configNoDefault[f.Name]
		switch zero := v.Field(i).IsZero(); {
		case listed && !zero:
			t.Errorf("Config.%s is in configNoDefault, but DefaultConfig sets it to %v", f.Name, v.Field(i))
		case !listed && zero:
			t.Errorf("DefaultConfig().%s is zero: give it a default, or list it in configNoDefault with a reason", f.Name)
		}
	}
	for name := range configNoDefault {
		if _, ok := v.Type().FieldByName(name); !ok {
			t.Errorf("configNoDefault lists %s, which Config no longer has", name)
		}
	}
}

// validConfig is DefaultConfig with the required fields.
func validConfig(t *testing.T) Config {
	t.Helper()
	c := DefaultConfig()
	c.Cluster = federation.MustClusterName("east")
	loc, err := federation.NewLocality("us-east", "us-east-1a", "")
	if err != nil {
		t.Fatal(err)
	}
	c.Locality, c.DataDir = loc, t.TempDir()
	return c
}

// Every field is checked by Validate (an invalid value is refused with an
// error that names it), or listed here with the reason it needs no check.
var configUnchecked = map[string]string{
	"Locality":    "a federation.Locality, valid by construction; Join requires one (TestJoinRequiresALocality)",
	"TrustDomain": "a federation.TrustDomain, valid by construction",
	"Kubeconfig":  "a path; client-go reports what is wrong with the file",
	"KubeConfig":  "a REST config, for tests",
	"Log":         "any logger",
}

func TestValidateChecksEveryFieldNamingIt(t *testing.T) {
	if err := func() error { c := validConfig(t); return c.Validate() }(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	cases := map[string]struct {
		field string // as Validate names it
		set   func(*Config)
	}{
		"Cluster":               {"cluster", func(c *Config) { c.Cluster = federation.ClusterName{} }},
		"DataDir":               {"data_dir", func(c *Config) { c.DataDir = "" }},
		"Source":                {"source", func(c *Config) { c.Source = "ftp" }},
		"SourcePath":            {"source_path", func(c *Config) { c.Source, c.SourcePath = SourceFile, "" }},
		"FilePollInterval":      {"file_poll_interval", func(c *Config) { c.FilePollInterval = time.Nanosecond }},
		"Namespace":             {"namespace", func(c *Config) { c.Namespace = "" }},
		"HTTPAddr":              {"http_addr", func(c *Config) { c.HTTPAddr = "no-port" }},
		"GatewayAddress":        {"gateway_address", func(c *Config) { c.GatewayAddress = "gw.example" }},
		"EgressPortMin":         {"egress_ports", func(c *Config) { c.EgressPortMin = 0 }},
		"EgressPortMax":         {"egress_ports", func(c *Config) { c.EgressPortMax = 70000 }},
		"GatewayAddresses":      {"gateway_addresses", func(c *Config) { c.GatewayAddresses = []string{"no-port"} }},
		"GatewaySelector":       {"gateway_selector", func(c *Config) { c.GatewaySelector = "" }},
		"GatewayServiceAccount": {"gateway_service_account", func(c *Config) { c.GatewayServiceAccount = "Not A Name" }},
		"GatewayIngressBind":    {"gateway_ingress_bind", func(c *Config) { c.GatewayIngressBind = "all" }},
		"HubAddresses":          {"hub_addresses[0]", func(c *Config) { c.HubAddresses = []string{"no-port"} }},
		"DNSAddr":               {"dns_addr", func(c *Config) { c.DNSAddr = "no-port" }},
		"MetricsAddr":           {"metrics_addr", func(c *Config) { c.MetricsAddr = "no-port" }},
		"LeaderElection": {"leader_election.identity", func(c *Config) {
			c.LeaderElection.LeaseName = "meshfed-agent"
			c.LeaderElection.Identity = ""
		}},
		"DNS":             {"ttl", func(c *Config) { c.DNSAddr = "127.0.0.1:5353"; c.DNS.TTL = 0 }},
		"ClusterSetIPs":   {"clusterset_ips", func(c *Config) { c.ClusterSetIPs = netip.MustParsePrefix("127.1.0.0/24") }},
		"GatewayAPIAddr":  {"gateway_api_addr", func(c *Config) { c.GatewayAPIAddr = "no-port" }},
		"SVIDTTL":         {"svid_ttl", func(c *Config) { c.SVIDTTL = time.Second }},
		"GatewaySVIDTTL":  {"gateway_svid_ttl", func(c *Config) { c.GatewaySVIDTTL = time.Second }},
		"BundleRefresh":   {"bundle_refresh", func(c *Config) { c.BundleRefresh = time.Millisecond }},
		"ClockSkew":       {"clock_skew", func(c *Config) { c.ClockSkew = -time.Second }},
		"Debounce":        {"debounce", func(c *Config) { c.Debounce = time.Hour }},
		"TrafficInterval": {"traffic_interval", func(c *Config) { c.TrafficInterval = time.Millisecond }},
		"MaxPublishBatch": {"max_publish_batch", func(c *Config) { c.MaxPublishBatch = 0 }},
		"MaxPublishBytes": {"max_publish_bytes", func(c *Config) { c.MaxPublishBytes = 1 }},
		"ReconnectMin":    {"reconnect", func(c *Config) { c.ReconnectMin = 0 }},
		"ReconnectMax":    {"reconnect", func(c *Config) { c.ReconnectMax = time.Hour }},
		"JoinTimeout":     {"join_timeout", func(c *Config) { c.JoinTimeout = 0 }},
	}
	typ := reflect.TypeOf(Config{})
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		_, checked := cases[name]
		_, unchecked := configUnchecked[name]
		if checked == unchecked {
			t.Errorf("Config.%s: give it a case here (a value Validate refuses) or list it in configUnchecked with a reason, not both or neither", name)
		}
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := validConfig(t)
			tc.set(&c)
			err := c.Validate()
			var fe *federation.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate() = %v, want a *federation.FieldError", err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("Validate() = %v, want it to name %s", err, tc.field)
			}
		})
	}
}

// A locality is optional for a restart (the stored one is used) but
// required at join, named as the field.
func TestJoinRequiresALocality(t *testing.T) {
	c := validConfig(t)
	c.Locality = federation.Locality{}
	if err := c.Validate(); err != nil {
		t.Fatalf("a config without a locality (a restart) is refused: %v", err)
	}
	err := Join(t.Context(), c, "mfjoin1.unused")
	var fe *federation.FieldError
	if !errors.As(err, &fe) || fe.Field != "locality" {
		t.Fatalf("Join without a locality = %v, want a FieldError naming locality", err)
	}
}
