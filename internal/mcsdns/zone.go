// Package mcsdns serves the Multi-Cluster Services DNS zone,
// clusterset.local, as KEP-1645 specifies it: the agent builds a Zone from
// its view of the federation (NewZone over a list of Services) and hands
// it to a Server, which answers over UDP and TCP from whichever Zone it
// was last given, until it is given another.
//
// Names (all under clusterset.local):
//
//	<svc>.<ns>.svc                       A/AAAA: the ClusterSetIPs (ClusterSetIP
//	                                     services) or every endpoint (headless)
//	<hostname>.<cluster>.<svc>.<ns>.svc  A/AAAA: one endpoint of a headless service
//	_<port>._<proto>.<svc>.<ns>.svc      SRV: each named port, to <svc>.<ns>.svc
//	                                     (ClusterSetIP) or to each endpoint's name
//	                                     (headless, endpoints with a hostname)
//
// A name that does not exist is NXDOMAIN, an existing name (including
// empty non-terminals such as <ns>.svc) without records of the asked type
// is NODATA (NOERROR, no answer); both carry the zone's SOA in the
// authority section, whose minimum is the TTL, so negative answers are
// cached no longer than positive ones. A name outside the zone is
// REFUSED. The answer logic (Zone.Answer) is pure; the Server adds the
// transport rules: EDNS0 buffer sizes, truncation of UDP answers (TC bit)
// and the full answer over TCP, limits and metrics.
package mcsdns

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/meshfed/meshfed/federation"
)

// Origin is the zone's name, fully qualified.
const Origin = "clusterset.local."

// DefaultTTL is the TTL of every record, and of negative answers. It is
// short so that a client sees a failover (a ClusterSetIP that changes, an
// endpoint that leaves a headless service) within seconds: resolvers
// (CoreDNS's cache included) keep an answer at most this long. The
// ClusterSetIP of an import is stable across failovers between exporting
// clusters (the gateway behind it chooses), so the cost of a short TTL is
// only query load, which the agent answers from memory.
const DefaultTTL = 5 * time.Second

// Service is one imported service as the zone serves it. The slices are
// owned by the caller until NewZone returns; NewZone copies what it keeps.
type Service struct {
	Key federation.ServiceKey
	// Headless services have no ClusterSetIP: their name resolves to the
	// endpoints' addresses.
	Headless bool
	// IPs are the ClusterSetIPs (at most one per family, in practice) of a
	// ClusterSetIP service; none while the importer has not assigned one
	// (the name then exists without addresses).
	IPs   []netip.Addr
	Ports []Port
	// Endpoints are a headless service's ready endpoints.
	Endpoints []Endpoint
}

// Port is one port of a Service. Only named ports have SRV records.
type Port struct {
	Name string
	// Protocol is TCP, UDP or SCTP (the Kubernetes protocol), the SRV
	// record's _<proto> label in lower case.
	Protocol string
	Port     uint16
}

// Endpoint is one endpoint of a headless Service.
type Endpoint struct {
	Cluster federation.ClusterName
	// Hostname is the endpoint's hostname (a DNS label); empty when it has
	// none, and then it has no name of its own and no SRV record.
	Hostname string
	Addrs    []netip.Addr
}

// node is the records of one name. A node with none is an empty
// non-terminal: it exists (NODATA, not NXDOMAIN).
type node struct {
	addrs []netip.Addr // A and AAAA, in order
	srv   []srvRecord
	soa   bool // the apex
}

type srvRecord struct {
	port   uint16
	target string // lower case, fully qualified
}

// Zone is an immutable snapshot of clusterset.local. It is safe for
// concurrent use.
type Zone struct {
	serial uint32
	ttl    uint32
	names  map[string]*node // lower-case fully qualified name → node
	soa    *dns.SOA
}

// NewZone builds the zone of services with serial (the view's revision,
// reported in the SOA) and ttl (DefaultTTL when 0; whole seconds, at
// least 1). Services with invalid data (an endpoint hostname that is not a
// DNS label) skip that data, not the service.
func NewZone(serial uint32, ttl time.Duration, services []Service) *Zone {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	secs := uint32(max(1, ttl/time.Second))
	z := &Zone{serial: serial, ttl: secs, names: map[string]*node{}}
	z.soa = &dns.SOA{Hdr: dns.RR_Header{Name: Origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: secs},
		Ns: "ns.dns." + Origin, Mbox: "hostmaster." + Origin, Serial: serial,
		Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: secs}
	z.at(Origin).soa = true
	for _, s := range services {
		z.add(s)
	}
	return z
}

// at returns the node of name, creating it and its ancestors up to the
// apex (empty non-terminals).
func (z *Zone) at(name string) *node {
	n := z.names[name]
	if n != nil {
		return n
	}
	n = &node{}
	z.names[name] = n
	if name != Origin {
		if i := strings.IndexByte(name, '.'); i >= 0 {
			z.at(name[i+1:])
		}
	}
	return n
}

func (z *Zone) add(s Service) {
	base := s.Key.Name() + "." + s.Key.Namespace() + ".svc." + Origin
	svc := z.at(base)
	if !s.Headless {
		svc.addrs = appendAddrs(svc.addrs, s.IPs)
	}
	var targets []string // SRV targets of a headless service
	if s.Headless {
		for _, e := range s.Endpoints {
			svc.addrs = appendAddrs(svc.addrs, e.Addrs)
			h := strings.ToLower(e.Hostname)
			if h == "" || len(h) > 63 || !isLabel(h) || e.Cluster.IsZero() || len(e.Addrs) == 0 {
				continue
			}
			name := h + "." + e.Cluster.String() + "." + base
			ep := z.at(name)
			ep.addrs = appendAddrs(ep.addrs, e.Addrs)
			if !slices.Contains(targets, name) {
				targets = append(targets, name)
			}
		}
	} else {
		targets = []string{base}
	}
	for _, p := range s.Ports {
		name := strings.ToLower(p.Name)
		proto := strings.ToLower(p.Protocol)
		if name == "" || !isLabel(name) || !isLabel(proto) || len(name)+1 > 63 || len(proto)+1 > 63 || p.Port == 0 {
			continue
		}
		n := z.at("_" + name + "._" + proto + "." + base)
		for _, t := range targets {
			n.srv = append(n.srv, srvRecord{port: p.Port, target: t})
		}
	}
}

// appendAddrs appends the valid addresses of add not already in to.
func appendAddrs(to, add []netip.Addr) []netip.Addr {
	for _, a := range add {
		if a.IsValid() && !slices.Contains(to, a.Unmap()) {
			to = append(to, a.Unmap())
		}
	}
	return to
}

// isLabel reports whether s is a lower-case DNS label of letters, digits
// and hyphens (port names may also hold hyphens only inside).
func isLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// Serial is the zone's SOA serial.
func (z *Zone) Serial() uint32 { return z.serial }

// Names is how many names the zone holds, empty non-terminals included.
func (z *Zone) Names() int { return len(z.names) }

// Answer returns the complete reply to the query req: authoritative, with
// every record, never truncated (the Server fits it to the transport).
// req must have exactly one question (the Server rejects others before).
func (z *Zone) Answer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = false
	if req.Opcode != dns.OpcodeQuery {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := req.Question[0]
	lname := strings.ToLower(q.Name)
	if (q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY) || !dns.IsSubDomain(Origin, lname) {
		m.Authoritative = false
		m.Rcode = dns.RcodeRefused
		return m
	}
	n := z.names[lname]
	if n == nil {
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{z.soa}
		return m
	}
	hdr := func(t uint16) dns.RR_Header {
		// The owner name is the question's, case preserved (resolvers
		// that randomise case check it).
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: z.ttl}
	}
	all := q.Qtype == dns.TypeANY
	if n.soa && (q.Qtype == dns.TypeSOA || all) {
		soa := *z.soa
		soa.Hdr.Name = q.Name
		m.Answer = append(m.Answer, &soa)
	}
	for _, a := range n.addrs {
		switch {
		case a.Is4() && (q.Qtype == dns.TypeA || all):
			b := a.As4()
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: b[:]})
		case a.Is6() && (q.Qtype == dns.TypeAAAA || all):
			b := a.As16()
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: b[:]})
		}
	}
	if len(n.srv) > 0 && (q.Qtype == dns.TypeSRV || all) {
		weight := uint16(100 / len(n.srv))
		for _, s := range n.srv {
			m.Answer = append(m.Answer, &dns.SRV{Hdr: hdr(dns.TypeSRV), Priority: 0, Weight: weight, Port: s.port, Target: s.target})
			// The targets' addresses, as additional records.
			for _, a := range z.names[s.target].addrs {
				h := dns.RR_Header{Name: s.target, Class: dns.ClassINET, Ttl: z.ttl}
				if a.Is4() {
					h.Rrtype = dns.TypeA
					b := a.As4()
					m.Extra = append(m.Extra, &dns.A{Hdr: h, A: b[:]})
				} else {
					h.Rrtype = dns.TypeAAAA
					b := a.As16()
					m.Extra = append(m.Extra, &dns.AAAA{Hdr: h, AAAA: b[:]})
				}
			}
		}
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{z.soa} // NODATA
	}
	return m
}
