package mcsdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/meshfed/meshfed/federation"
)

// Config tunes a Server. Start from DefaultConfig; NewServer validates it.
type Config struct {
	// TTL of every record and of negative answers (whole seconds).
	TTL time.Duration
	// MaxUDPSize is the largest UDP answer, whatever buffer a client's
	// EDNS0 option offers (a client without EDNS0 gets 512 bytes). Larger
	// answers are truncated with the TC bit set, and the client asks again
	// over TCP. 1232 is the size that avoids IP fragmentation (DNS Flag
	// Day 2020).
	MaxUDPSize int
	// MaxTCPConns bounds concurrent TCP connections; one more is closed at
	// once (and counted).
	MaxTCPConns int
	// TCPIdleTimeout closes a TCP connection idle that long between
	// queries; MaxTCPQueries closes it after that many queries.
	TCPIdleTimeout time.Duration
	MaxTCPQueries  int
	// QPS and Burst bound the rate of queries across all clients (a token
	// bucket); a query over it is answered REFUSED and counted. QPS 0
	// means no bound.
	QPS   float64
	Burst int
}

// Defaults and bounds.
const (
	DefaultMaxUDPSize     = 1232
	DefaultMaxTCPConns    = 256
	DefaultTCPIdleTimeout = 10 * time.Second
	DefaultMaxTCPQueries  = 1000
	DefaultQPS            = 50000
	DefaultBurst          = 5000
	// readBufferSize is the UDP read buffer: queries are far smaller.
	readBufferSize = 4096
	// ioTimeout bounds reading one query and writing one answer.
	ioTimeout = 2 * time.Second
)

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{TTL: DefaultTTL, MaxUDPSize: DefaultMaxUDPSize, MaxTCPConns: DefaultMaxTCPConns,
		TCPIdleTimeout: DefaultTCPIdleTimeout, MaxTCPQueries: DefaultMaxTCPQueries, QPS: DefaultQPS, Burst: DefaultBurst}
}

// Validate reports every field out of bounds, each a
// *federation.FieldError joined with errors.Join.
func (c Config) Validate() error {
	var errs []error
	add := func(field, value, reason string) {
		errs = append(errs, &federation.FieldError{Field: field, Value: value, Reason: reason})
	}
	if c.TTL < time.Second || c.TTL > time.Hour {
		add("dns.ttl", c.TTL.String(), "must be in 1s..1h")
	}
	if c.MaxUDPSize < dns.MinMsgSize || c.MaxUDPSize > 4096 {
		add("dns.max_udp_size", strconv.Itoa(c.MaxUDPSize), "must be in 512..4096")
	}
	if c.MaxTCPConns < 1 || c.MaxTCPConns > 65536 {
		add("dns.max_tcp_conns", strconv.Itoa(c.MaxTCPConns), "must be in 1..65536")
	}
	if c.TCPIdleTimeout < 100*time.Millisecond || c.TCPIdleTimeout > 5*time.Minute {
		add("dns.tcp_idle_timeout", c.TCPIdleTimeout.String(), "must be in 100ms..5m")
	}
	if c.MaxTCPQueries < 1 || c.MaxTCPQueries > 1<<20 {
		add("dns.max_tcp_queries", strconv.Itoa(c.MaxTCPQueries), "must be in 1..1048576")
	}
	if c.QPS < 0 || c.QPS > 1e7 {
		add("dns.qps", strconv.FormatFloat(c.QPS, 'g', -1, 64), "must be in 0..1e7 (0: no bound)")
	}
	if c.QPS > 0 && (c.Burst < 1 || c.Burst > 1e7) {
		add("dns.burst", strconv.Itoa(c.Burst), "must be in 1..1e7 with a QPS bound")
	}
	return errors.Join(errs...)
}

// Server answers queries for clusterset.local from the Zone last given to
// SetZone. Before the first one it answers SERVFAIL: it does not know yet
// which names exist, and a negative answer would be cached. It is safe for
// concurrent use; ServeDNS is called by the miekg/dns servers Serve runs.
type Server struct {
	cfg  Config
	zone atomic.Pointer[Zone]
	lim  *rate.Limiter // nil: no bound
	m    metrics
}

var _ dns.Handler = (*Server)(nil)

type metrics struct {
	queries     *prometheus.CounterVec
	common      [2][6]prometheus.Counter // [tcp][rcode] for rcodes 0..5
	truncated   prometheus.Counter
	limited     prometheus.Counter
	tcpConns    prometheus.Gauge
	tcpRefused  prometheus.Counter
	zoneSerial  prometheus.Gauge
	zoneNames   prometheus.Gauge
	zoneUpdates prometheus.Counter
}

// NewServer validates cfg and returns a Server whose metrics (names
// prefixed meshfed_agent_dns_) are registered with reg (nil: not
// registered).
func NewServer(cfg Config, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mcsdns: %w", err)
	}
	s := &Server{cfg: cfg}
	if cfg.QPS > 0 {
		s.lim = rate.NewLimiter(rate.Limit(cfg.QPS), cfg.Burst)
	}
	s.m = metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshfed_agent_dns_queries_total",
			Help: "DNS queries answered, by transport (udp, tcp) and response code."}, []string{"transport", "rcode"}),
		truncated: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_agent_dns_truncated_total",
			Help: "UDP answers truncated (TC bit) to the client's buffer; the client asks again over TCP."}),
		limited: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_agent_dns_rate_limited_total",
			Help: "Queries over the rate bound, answered REFUSED."}),
		tcpConns: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshfed_agent_dns_tcp_connections",
			Help: "Open DNS TCP connections."}),
		tcpRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_agent_dns_tcp_refused_total",
			Help: "DNS TCP connections closed at once because MaxTCPConns were open."}),
		zoneSerial: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshfed_agent_dns_zone_serial",
			Help: "SOA serial (the view's revision) of the zone being served."}),
		zoneNames: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshfed_agent_dns_zone_names",
			Help: "Names in the zone being served, empty non-terminals included."}),
		zoneUpdates: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_agent_dns_zone_updates_total",
			Help: "Zones swapped in."}),
	}
	for t, transport := range []string{"udp", "tcp"} {
		for rc := range s.m.common[t] {
			s.m.common[t][rc] = s.m.queries.WithLabelValues(transport, dns.RcodeToString[rc])
		}
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.m.queries, s.m.truncated, s.m.limited, s.m.tcpConns, s.m.tcpRefused,
			s.m.zoneSerial, s.m.zoneNames, s.m.zoneUpdates} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("mcsdns: metrics: %w", err)
			}
		}
	}
	return s, nil
}

// SetZone swaps z in; queries after it returns are answered from z.
func (s *Server) SetZone(z *Zone) {
	s.zone.Store(z)
	s.m.zoneSerial.Set(float64(z.Serial()))
	s.m.zoneNames.Set(float64(z.Names()))
	s.m.zoneUpdates.Inc()
}

// Zone returns the zone being served (nil before SetZone).
func (s *Server) Zone() *Zone { return s.zone.Load() }

// ServeDNS answers one query.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	_, tcp := w.LocalAddr().(*net.TCPAddr)
	var m *dns.Msg
	if s.lim != nil && !s.lim.Allow() {
		s.m.limited.Inc()
		m = new(dns.Msg)
		m.SetRcode(r, dns.RcodeRefused)
	} else {
		m = s.Reply(r, tcp)
	}
	if m.Truncated && !tcp {
		s.m.truncated.Inc()
	}
	ti := 0
	if tcp {
		ti = 1
	}
	if m.Rcode >= 0 && m.Rcode < len(s.m.common[ti]) {
		s.m.common[ti][m.Rcode].Inc()
	} else {
		s.m.queries.WithLabelValues([]string{"udp", "tcp"}[ti], dns.RcodeToString[m.Rcode]).Inc()
	}
	_ = w.WriteMsg(m) // a client gone is not the server's error
}

// Reply is the answer to r as the server sends it over UDP (tcp false) or
// TCP: the zone's answer, with an OPT record when r has one, truncated to
// the client's EDNS0 buffer (at most MaxUDPSize; 512 without EDNS0) over
// UDP and to 65535 bytes over TCP.
func (s *Server) Reply(r *dns.Msg, tcp bool) *dns.Msg {
	opt := r.IsEdns0()
	var m *dns.Msg
	z := s.zone.Load()
	switch {
	case opt != nil && opt.Version() != 0:
		m = new(dns.Msg)
		m.SetRcode(r, dns.RcodeBadVers)
	case z == nil:
		m = new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
	default:
		m = z.Answer(r)
	}
	size := dns.MinMsgSize
	if opt != nil {
		m.SetEdns0(uint16(s.cfg.MaxUDPSize), false)
		size = min(max(int(opt.UDPSize()), dns.MinMsgSize), s.cfg.MaxUDPSize)
	}
	if tcp {
		size = dns.MaxMsgSize
	}
	m.Compress = true
	m.Truncate(size)
	return m
}

// Serve answers queries on pc (UDP) and ln (TCP), either may be nil,
// until ctx is done; then it stops both and returns nil. It returns an
// error when a transport fails.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn, ln net.Listener) error {
	var servers []*dns.Server
	if pc != nil {
		servers = append(servers, &dns.Server{PacketConn: pc, Handler: s, UDPSize: readBufferSize, ReadTimeout: ioTimeout, WriteTimeout: ioTimeout})
	}
	if ln != nil {
		ll := &limitListener{Listener: ln, sem: make(chan struct{}, s.cfg.MaxTCPConns), m: &s.m}
		idle := s.cfg.TCPIdleTimeout
		servers = append(servers, &dns.Server{Listener: ll, Handler: s, ReadTimeout: ioTimeout, WriteTimeout: ioTimeout,
			IdleTimeout: func() time.Duration { return idle }, MaxTCPQueries: s.cfg.MaxTCPQueries})
	}
	if len(servers) == 0 {
		return errors.New("mcsdns: nothing to serve on")
	}
	errc := make(chan error, len(servers))
	var started sync.WaitGroup
	for _, srv := range servers {
		started.Add(1)
		var once sync.Once
		srv.NotifyStartedFunc = func() { once.Do(started.Done) }
		go func() {
			err := srv.ActivateAndServe()
			once.Do(started.Done) // failed before it started
			errc <- err
		}()
	}
	// Shutdown refuses a server not started yet, which would then serve
	// on: wait for every start (or failure) first.
	started.Wait()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.ShutdownContext(sctx) // one that already failed is not started
	}
	if err != nil {
		return fmt.Errorf("mcsdns: %w", err)
	}
	return nil
}

// limitListener closes connections beyond the semaphore's capacity at
// once, so a flood of idle connections cannot starve the server.
type limitListener struct {
	net.Listener
	sem chan struct{}
	m   *metrics
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			l.m.tcpConns.Inc()
			return &limitConn{Conn: c, l: l}, nil
		default:
			l.m.tcpRefused.Inc()
			_ = c.Close()
		}
	}
}

type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		<-c.l.sem
		c.l.m.tcpConns.Dec()
	})
	return err
}
