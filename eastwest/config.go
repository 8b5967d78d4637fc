package eastwest

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/meshfed/meshfed/federation"
)

// Config tunes a Gateway. Start from DefaultConfig; New validates it.
type Config struct {
	// Instance names this replica (its pod name), for reports and logs.
	Instance string
	// Ingress is the UDP address of the QUIC ingress. Empty: the agent's
	// ingress spec (bind address and port) decides, at the first config.
	Ingress string
	// EgressBind is the IP address the egress listeners bind.
	EgressBind netip.Addr
	// EndpointMap rewrites local endpoint addresses before dialing: an
	// address inside a prefix is replaced by the mapped IP (same port).
	// For simulated pod networks only (testenv, meshfed dev).
	EndpointMap map[netip.Prefix]netip.Addr

	// ConnectTimeout bounds one attempt: a QUIC dial, a stream open and
	// its status, or an endpoint dial.
	ConnectTimeout time.Duration
	// IdleTimeout closes a piped connection that moved no byte either way
	// for this long.
	IdleTimeout time.Duration
	// HeaderTimeout bounds reading a stream's header at ingress.
	HeaderTimeout time.Duration

	// ProbeInterval and ProbeTimeout drive the active probe of each remote
	// gateway: a probe stream every interval, answered within the timeout.
	// ProbeFailures consecutive failures take the gateway out of
	// selection. The worst-case detection time of a blackholed gateway is
	// ProbeInterval + ProbeFailures × ProbeTimeout (200ms + 2 × 250ms =
	// 700ms by default).
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	ProbeFailures int
	// KeepAlive is the QUIC keep-alive period; MaxIdle the QUIC idle
	// timeout of a connection that hears nothing.
	KeepAlive time.Duration
	MaxIdle   time.Duration
	// ReconnectMin and ReconnectMax bound the reconnect backoff to a
	// remote gateway.
	ReconnectMin, ReconnectMax time.Duration

	// MaxStreamsPerConn bounds concurrent streams a remote gateway may
	// open on one connection; MaxStreamsPerCluster bounds them across all
	// connections from one source cluster (beyond it: CodeOverloaded).
	MaxStreamsPerConn    int
	MaxStreamsPerCluster int
	// MaxConnsPerCluster bounds concurrent QUIC connections from one
	// source cluster.
	MaxConnsPerCluster int

	// Outlier detection: ConsecutiveErrors failures in a row eject a
	// cluster (or, at ingress, an endpoint) for BaseEjection × the number
	// of times it was ejected, at most MaxEjection. An ejected cluster is
	// still tried, last, when nothing else is left.
	ConsecutiveErrors int
	BaseEjection      time.Duration
	MaxEjection       time.Duration
	// HTTPRetries is how many other clusters an idempotent HTTP request
	// may be retried on after a 503 or a reset.
	HTTPRetries int

	// DrainDelay is how long, after its context ends, the gateway keeps
	// serving as before while /readyz already answers 503, so that
	// EndpointSlices drop it before it stops accepting (Kubernetes takes a
	// few seconds to propagate a pod's readiness).
	DrainDelay time.Duration
	// DrainTimeout bounds how long Run waits for in-flight work after its
	// context ends (and DrainDelay).
	DrainTimeout time.Duration
	// ReportInterval is how often the gateway reports its health to the
	// agent besides after each change.
	ReportInterval time.Duration

	// AccessLog, when set, gets a line per egress connection or request
	// and per ingress stream.
	AccessLog *slog.Logger
	// Log receives the gateway's logs; nil discards them.
	Log *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Instance:             "gateway",
		EgressBind:           netip.IPv4Unspecified(),
		ConnectTimeout:       2 * time.Second,
		IdleTimeout:          time.Hour,
		HeaderTimeout:        5 * time.Second,
		ProbeInterval:        200 * time.Millisecond,
		ProbeTimeout:         250 * time.Millisecond,
		ProbeFailures:        2,
		KeepAlive:            5 * time.Second,
		MaxIdle:              30 * time.Second,
		ReconnectMin:         50 * time.Millisecond,
		ReconnectMax:         5 * time.Second,
		MaxStreamsPerConn:    10000,
		MaxStreamsPerCluster: 20000,
		MaxConnsPerCluster:   16,
		ConsecutiveErrors:    5,
		BaseEjection:         10 * time.Second,
		MaxEjection:          5 * time.Minute,
		HTTPRetries:          2,
		DrainTimeout:         30 * time.Second,
		ReportInterval:       10 * time.Second,
	}
}

// Validate reports every field that is out of bounds, each naming the
// field and the bound.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, value, format string, args ...any) {
		errs = append(errs, &federation.FieldError{Field: field, Value: value, Reason: fmt.Sprintf(format, args...)})
	}
	if n := len(c.Instance); n == 0 || n > 253 {
		add("instance", c.Instance, "must be 1 to 253 bytes")
	}
	if !c.EgressBind.IsValid() {
		add("egress_bind", "", "must be an IP address")
	}
	dur := func(field string, d, lo, hi time.Duration) {
		if d < lo || d > hi {
			add(field, d.String(), "must be from %v to %v", lo, hi)
		}
	}
	dur("connect_timeout", c.ConnectTimeout, 10*time.Millisecond, time.Minute)
	dur("idle_timeout", c.IdleTimeout, time.Second, 24*time.Hour)
	dur("header_timeout", c.HeaderTimeout, 10*time.Millisecond, time.Minute)
	dur("probe_interval", c.ProbeInterval, 10*time.Millisecond, time.Minute)
	dur("probe_timeout", c.ProbeTimeout, 10*time.Millisecond, time.Minute)
	dur("keep_alive", c.KeepAlive, 100*time.Millisecond, time.Hour)
	dur("max_idle", c.MaxIdle, time.Second, time.Hour)
	dur("reconnect_min", c.ReconnectMin, time.Millisecond, time.Minute)
	dur("reconnect_max", c.ReconnectMax, c.ReconnectMin, time.Hour)
	dur("base_ejection", c.BaseEjection, 10*time.Millisecond, time.Hour)
	dur("max_ejection", c.MaxEjection, c.BaseEjection, 24*time.Hour)
	dur("drain_delay", c.DrainDelay, 0, 5*time.Minute)
	dur("drain_timeout", c.DrainTimeout, 0, time.Hour)
	dur("report_interval", c.ReportInterval, 100*time.Millisecond, time.Hour)
	if c.KeepAlive >= c.MaxIdle {
		add("keep_alive", c.KeepAlive.String(), "must be below max_idle (%v)", c.MaxIdle)
	}
	intIn := func(field string, v, lo, hi int) {
		if v < lo || v > hi {
			add(field, fmt.Sprint(v), "must be from %d to %d", lo, hi)
		}
	}
	intIn("probe_failures", c.ProbeFailures, 1, 10)
	intIn("max_streams_per_conn", c.MaxStreamsPerConn, 1, 1<<20)
	intIn("max_streams_per_cluster", c.MaxStreamsPerCluster, 1, 1<<22)
	intIn("max_conns_per_cluster", c.MaxConnsPerCluster, 1, 1<<16)
	intIn("consecutive_errors", c.ConsecutiveErrors, 1, 1000)
	intIn("http_retries", c.HTTPRetries, 0, 10)
	for p, a := range c.EndpointMap {
		if !p.IsValid() || !a.IsValid() {
			add("endpoint_map", p.String()+"="+a.String(), "must map a prefix to an IP address")
		}
	}
	return errors.Join(errs...)
}
