package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/internal/mcsdns"
	"github.com/meshfed/meshfed/trust"
)

// SourceKind selects the catalog source.
type SourceKind string

// Catalog sources.
const (
	// SourceKubernetes watches MCS ServiceExports, Services and
	// EndpointSlices and writes imports into the cluster.
	SourceKubernetes SourceKind = "kubernetes"
	// SourceFile reads a YAML catalog file (see the package doc); imports
	// live only in the agent's state.
	SourceFile SourceKind = "file"
)

// Limits and defaults.
const (
	DefaultHTTPAddr        = "127.0.0.1:7480"
	DefaultNamespace       = "meshfed-system"
	DefaultDebounce        = 50 * time.Millisecond
	DefaultEgressPortMin   = 15000
	DefaultEgressPortMax   = 15999
	DefaultFilePoll        = time.Second
	DefaultReconnectMin    = 200 * time.Millisecond
	DefaultReconnectMax    = 10 * time.Second
	DefaultMaxPublishBatch = 1024      // the hub's limit of changes per PublishExports
	DefaultMaxPublishBytes = 1 << 20   // well under the hub's 4 MiB message limit
	MaxPublishBytes        = 3 << 20   // leaves room for framing under the hub's 4 MiB
	MaxExports             = 4096      // the hub's limit of exports per cluster
	MaxHubAddresses        = 16        // --hub addresses
	MaxHubStateBytes       = 256 << 20 // the largest persisted hub state read back
	DefaultJoinTimeout     = 30 * time.Second
	DefaultGatewayAPIAddr  = "127.0.0.1:7481"
	// DefaultGatewaySVIDTTL: renewed at 18 h, a gateway outlives an
	// agent outage of 18 h.
	DefaultGatewaySVIDTTL = 36 * time.Hour
	// DefaultGatewaySelector selects the pods of deploy/kustomize/gateway.
	DefaultGatewaySelector = "app.kubernetes.io/name=meshfed-gateway"
)

// Config configures an Agent. Build it with DefaultConfig, set Cluster,
// Locality, DataDir and Source, then pass it to New, which validates it.
type Config struct {
	// Cluster is this cluster's name; it must match the join token and the
	// stored credentials.
	Cluster federation.ClusterName
	// Locality is sent at join (required there) and stated in every Sync
	// hello, so a change reaches the hub. Zero after join: the hello
	// states none and the hub keeps its record.
	Locality federation.Locality
	// TrustDomain is the cluster's SPIFFE trust domain, chosen at join;
	// zero means <cluster>.meshfed.local. After join the stored
	// credentials' trust domain is used.
	TrustDomain federation.TrustDomain
	// DataDir holds the credentials (file source), the cluster CA root
	// (file source), the cached hub state and the catalog-independent
	// agent state. Required.
	DataDir string
	// Source selects the catalog source.
	Source SourceKind
	// SourcePath is the YAML catalog file of the file source.
	SourcePath string
	// FilePollInterval is how often the file source checks its file.
	FilePollInterval time.Duration

	// Kubeconfig is the kubeconfig file of the kubernetes source; empty
	// means in-cluster config. KubeConfig, if set, takes precedence.
	Kubeconfig string
	// KubeConfig is a REST config for the kubernetes source (tests).
	KubeConfig *rest.Config
	// Namespace is where the agent keeps its Secrets in-cluster.
	Namespace string

	// HTTPAddr is host:port of /healthz, /readyz, /metrics and /state;
	// empty disables the HTTP server.
	HTTPAddr string
	// MetricsAddr is host:port of a second HTTP server that serves only
	// /metrics, where Prometheus can scrape it (the pod IP); /state stays
	// on HTTPAddr. Empty disables it.
	MetricsAddr string

	// GatewayAddress is the IP address imports' EndpointSlices point at
	// while no gateway pod (GatewaySelector) is ready: a gateway outside
	// the cluster's pods, or none yet.
	GatewayAddress string
	// EgressPortMin and EgressPortMax bound the egress ports assigned to
	// imported service ports, one port each.
	EgressPortMin, EgressPortMax int
	// GatewayAddresses are host:port of the cluster's east-west gateways
	// as remote clusters reach them, sent at join.
	GatewayAddresses []string
	// GatewaySelector selects the gateway pods (in Namespace) whose ready
	// replicas imports point at (kubernetes source); GatewayAddress is
	// the fallback while none is ready.
	GatewaySelector string
	// GatewayServiceAccount is the ServiceAccount (in Namespace) whose
	// tokens authenticate gateways in-cluster (kubernetes source), checked
	// by a TokenReview; the bootstrap token is refused there.
	GatewayServiceAccount string
	// GatewayIngressBind is the IP address the gateways bind their QUIC
	// ingress to (sent to them in the config stream); empty means all.
	GatewayIngressBind string

	// HubAddresses, if set, are the hub servers' host:port to dial instead
	// of those in the token and the stored credentials (a hub behind a
	// proxy, a NAT or a load balancer). The hub is still authenticated by
	// its CA.
	HubAddresses []string

	// DNSAddr is host:port of the clusterset.local DNS server, UDP and TCP
	// on the same port; empty disables it. DNS tunes it (TTL, sizes,
	// limits; see mcsdns.Config).
	DNSAddr string
	DNS     mcsdns.Config
	// ClusterSetIPs is the prefix each import of the file source is given
	// a ClusterSetIP from (its DNS name resolves to it, and the gateways
	// listen on it at the service's own ports). Not with the
	// kubernetes source,
	// where the ClusterSetIP is the derived Service's ClusterIP. Zero: the
	// file source's imports have no ClusterSetIP.
	ClusterSetIPs netip.Prefix

	// GatewayAPIAddr is host:port of the gateway API (config stream and
	// SVIDs, mTLS with the cluster's SVIDs); empty disables it.
	GatewayAPIAddr string
	// SVIDTTL is the lifetime of the SVIDs the cluster CA issues (agent
	// and gateways); they are renewed at half-life.
	SVIDTTL time.Duration
	// GatewaySVIDTTL is the lifetime of the gateways' SVIDs, renewed at
	// half-life. It is long (DefaultGatewaySVIDTTL) so that a gateway
	// keeps serving through an agent outage of half of it; the cluster's
	// root then keeps a retired root that much longer after a rotation.
	GatewaySVIDTTL time.Duration
	// BundleRefresh is the refresh hint published in the cluster's bundle;
	// a CA rotation publishes the new root at least 3 refresh hints before
	// it signs, until every member holds it, and at most MaxPrepareFactor
	// (12) refresh hints.
	BundleRefresh time.Duration
	// ClockSkew is the clock disagreement the cluster CA tolerates: roots
	// are backdated by it and an old root stays SVIDTTL + ClockSkew after
	// a rotation switched away from it.
	ClockSkew time.Duration

	// Debounce is how long a burst of catalog changes is collected before
	// it is published.
	Debounce time.Duration
	// TrafficInterval is how often the agent sends the hub its gateway
	// replicas' traffic summary (for the web UI), when the hub takes them.
	TrafficInterval time.Duration
	// MaxPublishBatch bounds the changes in one PublishExports message.
	MaxPublishBatch int
	// MaxPublishBytes bounds the encoded size of one PublishExports message.
	MaxPublishBytes int
	// ReconnectMin and ReconnectMax bound the reconnect backoff (with full
	// jitter) to the hub.
	ReconnectMin, ReconnectMax time.Duration
	// JoinTimeout bounds the Join call.
	JoinTimeout time.Duration

	// LeaderElection, with a LeaseName (kubernetes source), runs this
	// agent as one of several replicas of which the Lease holder alone
	// writes (see leader.go); zero: a single replica.
	LeaderElection LeaderElectionConfig

	// Log receives the agent's logs; nil discards them.
	Log *slog.Logger
}

// DefaultConfig returns a Config with every tunable set.
func DefaultConfig() Config {
	return Config{
		Source:                SourceKubernetes,
		FilePollInterval:      DefaultFilePoll,
		Namespace:             DefaultNamespace,
		HTTPAddr:              DefaultHTTPAddr,
		EgressPortMin:         DefaultEgressPortMin,
		EgressPortMax:         DefaultEgressPortMax,
		Debounce:              DefaultDebounce,
		TrafficInterval:       DefaultTrafficInterval,
		MaxPublishBatch:       DefaultMaxPublishBatch,
		MaxPublishBytes:       DefaultMaxPublishBytes,
		ReconnectMin:          DefaultReconnectMin,
		ReconnectMax:          DefaultReconnectMax,
		JoinTimeout:           DefaultJoinTimeout,
		GatewayAPIAddr:        DefaultGatewayAPIAddr,
		DNS:                   mcsdns.DefaultConfig(),
		SVIDTTL:               trust.DefaultSVIDTTL,
		GatewaySVIDTTL:        DefaultGatewaySVIDTTL,
		GatewayServiceAccount: DefaultGatewayServiceAccount,
		GatewaySelector:       DefaultGatewaySelector,
		BundleRefresh:         trust.DefaultRefreshHint,
		ClockSkew:             trust.DefaultClockSkew,
		LeaderElection: LeaderElectionConfig{LeaseDuration: DefaultLeaseDuration, RenewDeadline: DefaultRenewDeadline,
			RetryPeriod: DefaultRetryPeriod},
	}
}

// ParseSource parses the --source flag: "kubernetes" or "file:PATH".
func ParseSource(s string) (SourceKind, string, error) {
	switch {
	case s == string(SourceKubernetes):
		return SourceKubernetes, "", nil
	case strings.HasPrefix(s, "file:") && len(s) > len("file:"):
		return SourceFile, s[len("file:"):], nil
	}
	return "", "", &federation.FieldError{Field: "source", Value: s, Reason: `must be "kubernetes" or "file:PATH"`}
}

// Validate reports every invalid field at once, each a
// *federation.FieldError joined with errors.Join.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, value, reason string, args ...any) {
		errs = append(errs, &federation.FieldError{Field: field, Value: value, Reason: fmt.Sprintf(reason, args...)})
	}
	if c.Cluster.IsZero() {
		add("cluster", "", "required")
	}
	if c.DataDir == "" {
		add("data_dir", "", "required")
	}
	switch c.Source {
	case SourceKubernetes:
		if _, err := labels.Parse(c.GatewaySelector); err != nil || c.GatewaySelector == "" {
			add("gateway_selector", c.GatewaySelector, "must be a label selector of the gateway pods")
		}
	case SourceFile:
		if c.SourcePath == "" {
			add("source_path", "", "required with the file source")
		}
	default:
		add("source", string(c.Source), `must be "kubernetes" or "file"`)
	}
	if c.GatewayAddress != "" && net.ParseIP(c.GatewayAddress) == nil {
		add("gateway_address", c.GatewayAddress, "must be an IP address")
	}
	if c.GatewayIngressBind != "" && net.ParseIP(c.GatewayIngressBind) == nil {
		add("gateway_ingress_bind", c.GatewayIngressBind, "must be an IP address")
	}
	if c.FilePollInterval < 10*time.Millisecond || c.FilePollInterval > time.Hour {
		add("file_poll_interval", c.FilePollInterval.String(), "must be in 10ms..1h")
	}
	if c.Namespace == "" || len(c.Namespace) > federation.MaxNameLength {
		add("namespace", c.Namespace, "must be a namespace name of 1 to %d characters", federation.MaxNameLength)
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			add("http_addr", c.HTTPAddr, "must be host:port")
		}
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			add("metrics_addr", c.MetricsAddr, "must be host:port")
		}
	}
	if c.DNSAddr != "" {
		if _, _, err := net.SplitHostPort(c.DNSAddr); err != nil {
			add("dns_addr", c.DNSAddr, "must be host:port")
		}
		if err := c.DNS.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.ClusterSetIPs.IsValid() {
		switch host := c.ClusterSetIPs.Addr().BitLen() - c.ClusterSetIPs.Bits(); {
		case c.Source != SourceFile:
			add("clusterset_ips", c.ClusterSetIPs.String(), "only with the file source (in Kubernetes the derived Service's ClusterIP is the ClusterSetIP)")
		case host < 2:
			add("clusterset_ips", c.ClusterSetIPs.String(), "must hold at least 2 addresses besides its first and last (a prefix of at most /30, /126)")
		}
	}
	if len(c.HubAddresses) > MaxHubAddresses {
		add("hub_addresses", fmt.Sprint(len(c.HubAddresses)), "at most %d", MaxHubAddresses)
	}
	for i, a := range c.HubAddresses {
		if _, _, err := net.SplitHostPort(a); err != nil {
			add(fmt.Sprintf("hub_addresses[%d]", i), a, "must be host:port")
		}
	}
	if c.GatewayAPIAddr != "" {
		if _, _, err := net.SplitHostPort(c.GatewayAPIAddr); err != nil {
			add("gateway_api_addr", c.GatewayAPIAddr, "must be host:port")
		}
	}
	if c.Source == SourceKubernetes && len(validation.IsDNS1123Subdomain(c.GatewayServiceAccount)) > 0 {
		add("gateway_service_account", c.GatewayServiceAccount, "must be a ServiceAccount name (a DNS subdomain, 1 to 253 characters)")
	}
	if c.GatewaySVIDTTL < trust.MinSVIDTTL || c.GatewaySVIDTTL > trust.MaxAllowedSVIDTTL {
		add("gateway_svid_ttl", c.GatewaySVIDTTL.String(), "must be in %v..%v", trust.MinSVIDTTL, trust.MaxAllowedSVIDTTL)
	}
	if c.SVIDTTL < trust.MinSVIDTTL || c.SVIDTTL > trust.MaxAllowedSVIDTTL {
		add("svid_ttl", c.SVIDTTL.String(), "must be in %v..%v", trust.MinSVIDTTL, trust.MaxAllowedSVIDTTL)
	}
	if c.BundleRefresh < trust.MinRefreshHint || c.BundleRefresh > trust.MaxRefreshHint {
		add("bundle_refresh", c.BundleRefresh.String(), "must be in %v..%v", trust.MinRefreshHint, trust.MaxRefreshHint)
	}
	if c.ClockSkew < 0 || c.ClockSkew > trust.MaxClockSkew {
		add("clock_skew", c.ClockSkew.String(), "must be in 0s..%v", trust.MaxClockSkew)
	}
	if c.EgressPortMin < 1 || c.EgressPortMax > 65535 || c.EgressPortMin > c.EgressPortMax {
		add("egress_ports", fmt.Sprintf("%d-%d", c.EgressPortMin, c.EgressPortMax), "must be a range within 1..65535")
	}
	if err := federation.CheckGatewayAddresses(c.GatewayAddresses); err != nil {
		errs = append(errs, err)
	}
	if c.Debounce < 0 || c.Debounce > 10*time.Second {
		add("debounce", c.Debounce.String(), "must be in 0s..10s")
	}
	if c.TrafficInterval < minTrafficInterval || c.TrafficInterval > maxTrafficInterval {
		add("traffic_interval", c.TrafficInterval.String(), "must be in %v..%v", minTrafficInterval, maxTrafficInterval)
	}
	if c.MaxPublishBatch < 1 || c.MaxPublishBatch > DefaultMaxPublishBatch {
		add("max_publish_batch", fmt.Sprint(c.MaxPublishBatch), "must be in 1..%d", DefaultMaxPublishBatch)
	}
	if c.MaxPublishBytes < 64<<10 || c.MaxPublishBytes > MaxPublishBytes {
		add("max_publish_bytes", fmt.Sprint(c.MaxPublishBytes), "must be in %d..%d", 64<<10, MaxPublishBytes)
	}
	if c.ReconnectMin < time.Millisecond || c.ReconnectMax < c.ReconnectMin || c.ReconnectMax > 5*time.Minute {
		add("reconnect", fmt.Sprintf("%v..%v", c.ReconnectMin, c.ReconnectMax), "must satisfy 1ms <= min <= max <= 5m")
	}
	if c.JoinTimeout < time.Second || c.JoinTimeout > 10*time.Minute {
		add("join_timeout", c.JoinTimeout.String(), "must be in 1s..10m")
	}
	c.LeaderElection.validate(add, c.Source)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("agent: invalid config: %w", err)
	}
	return nil
}

// rootConfig is the cluster CA root's configuration for trust domain td.
func (c *Config) rootConfig(td spiffeid.TrustDomain) trust.RootConfig {
	rc := trust.DefaultRootConfig()
	rc.TrustDomain = td
	rc.MaxSVIDTTL = max(c.SVIDTTL, c.GatewaySVIDTTL)
	rc.RefreshHint = c.BundleRefresh
	rc.PrepareDuration = trust.DefaultPrepareFactor * c.BundleRefresh
	rc.MaxPrepareDuration = MaxPrepareFactor * c.BundleRefresh
	rc.ClockSkew = c.ClockSkew
	return rc
}

// gatewayCAConfig is the configuration of the CA view that signs gateway
// SVIDs: the same root, a longer lifetime.
func (c *Config) gatewayCAConfig() trust.CAConfig {
	cc := c.caConfig()
	cc.SVIDTTL = c.GatewaySVIDTTL
	return cc
}

// caConfig is the cluster CA's configuration.
func (c *Config) caConfig() trust.CAConfig {
	cc := trust.DefaultCAConfig()
	cc.SVIDTTL = c.SVIDTTL
	cc.Backdate = min(trust.DefaultBackdate, c.ClockSkew)
	return cc
}
