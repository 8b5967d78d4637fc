package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/internal/mcsdns"
)

// clusterSetIPSource gives the ClusterSetIPs of the imports: the derived
// Services' ClusterIPs (kubernetes importer) or the addresses the agent
// assigns from Config.ClusterSetIPs (file source). The DNS goroutine calls
// it after each kick; the returned map is the caller's.
type clusterSetIPSource interface {
	clusterSetIPs() map[federation.ServiceKey][]netip.Addr
}

var (
	_ clusterSetIPSource = (*kubeImporter)(nil)
	_ clusterSetIPSource = (*clusterSetIPTable)(nil)
)

// dnsServices is the zone's content: every import of plans, with its
// ClusterSetIPs from ips. This is where a headless import's endpoints
// (hostname, cluster, addresses) join the zone, as mcsdns.Service.Endpoints
// with Headless set.
func dnsServices(plans map[string]*importPlan, ips map[federation.ServiceKey][]netip.Addr) []mcsdns.Service {
	out := make([]mcsdns.Service, 0, len(plans))
	for _, key := range sortedKeys(plans) {
		p := plans[key]
		svc := p.service()
		if svc.IsZero() {
			continue
		}
		s := mcsdns.Service{Key: svc, Headless: p.Headless}
		if !p.Headless {
			s.IPs = ips[svc]
		}
		for _, port := range p.Ports {
			s.Ports = append(s.Ports, mcsdns.Port{Name: port.GetName(), Protocol: string(k8sProtocol(port.GetProtocol())), Port: uint16(port.GetPort())})
		}
		if p.Headless {
			s.Endpoints = headlessDNSEndpoints(p)
		}
		out = append(out, s)
	}
	return out
}

// kickDNS asks for the zone to be rebuilt.
func (a *Agent) kickDNS() {
	select {
	case a.dnsKick <- struct{}{}:
	default:
	}
}

// runDNS serves the zone on pc and ln and rebuilds it from the latest
// view snapshot (the hub's, or the cached one while the hub is away) and
// the ClusterSetIPs after every kick, until ctx is done.
func (a *Agent) runDNS(ctx context.Context, pc net.PacketConn, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- a.dns.Serve(ctx, pc, ln) }()
	a.kickDNS()
	for {
		select {
		case <-ctx.Done():
			return <-errc
		case err := <-errc:
			if err == nil {
				err = errors.New("stopped")
			}
			return err
		case <-a.dnsKick:
		}
		st := a.status()
		snap := st.snap
		var src clusterSetIPSource
		if st.importer != nil {
			src = st.importer
		}
		if a.csIPs != nil {
			src = a.csIPs
		}
		if snap == nil {
			continue // no view yet: the server answers SERVFAIL
		}
		var ips map[federation.ServiceKey][]netip.Addr
		if src != nil {
			ips = src.clusterSetIPs()
		}
		plans, _ := planImports(a.cfg.Cluster.String(), snap)
		a.dns.SetZone(mcsdns.NewZone(uint32(snap.revision), a.cfg.DNS.TTL, dnsServices(plans, ips)))
	}
}

// DNSAddr returns the address (UDP and TCP) the DNS server listens on,
// once Run has started it ("" before, or without Config.DNSAddr).
func (a *Agent) DNSAddr() string {
	return a.status().dnsAddr
}

// listenDNS opens UDP and TCP on addr, the same port for both (a port 0
// picks one free for both).
func listenDNS(addr string) (net.PacketConn, net.Listener, error) {
	var err error
	for range 20 {
		var pc net.PacketConn
		pc, err = net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("agent: dns: %w", err)
		}
		var ln net.Listener
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		_ = pc.Close()
		if _, port, _ := net.SplitHostPort(addr); port != "0" {
			break
		}
	}
	return nil, nil, fmt.Errorf("agent: dns: %w", err)
}

// clusterSetIPTable assigns each import of the file source a ClusterSetIP
// from Config.ClusterSetIPs (the kubernetes source has the derived
// Services' ClusterIPs instead). It is the egress ports' allocator over
// the prefix's addresses: slot i is the prefix's address i+1, the lowest
// free slot is assigned, kept while the import exists and across restarts
// (persisted in the data directory), and held back DefaultEgressPortHold
// after the import went, so that a client still holding the old answer
// never reaches another service.
type clusterSetIPTable struct {
	prefix netip.Prefix
	slots  *egressTable
	file   *egressFile // set by load
}

// maxClusterSetIPs bounds the slots of a prefix.
const maxClusterSetIPs = 1 << 16

func newClusterSetIPTable(prefix netip.Prefix, onChange func()) *clusterSetIPTable {
	prefix = prefix.Masked()
	n := maxClusterSetIPs
	if host := prefix.Addr().BitLen() - prefix.Bits(); host < 17 {
		n = 1<<host - 2 // neither the prefix's first address nor its last
	}
	return &clusterSetIPTable{prefix: prefix, slots: newEgressTable(0, max(n-1, 0), onChange)}
}

func (t *clusterSetIPTable) addr(slot int) netip.Addr {
	b := t.prefix.Addr().As16()
	lo := binary.BigEndian.Uint64(b[8:])
	n := lo + uint64(slot) + 1 // slots stay inside the prefix: no carry out of it
	binary.BigEndian.PutUint64(b[8:], n)
	if n < lo {
		binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(b[:8])+1)
	}
	a := netip.AddrFrom16(b)
	if t.prefix.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

// load seeds the table from its file at path (none is no error) and saves
// it there from then on.
func (t *clusterSetIPTable) load(path string) error {
	f := newEgressFile(path)
	t.file = &f
	m, err := f.load()
	t.slots.seed(m)
	return err
}

// update allocates for plans and saves the table when it changed.
func (t *clusterSetIPTable) update(plans map[string]*importPlan) error {
	changed, err := t.allocate(plans)
	if changed && t.file != nil {
		if serr := t.file.save(t.slots.snapshot()); serr != nil {
			err = errors.Join(err, fmt.Errorf("saving the ClusterSetIPs: %w", serr))
		}
	}
	return err
}

// allocate assigns every import of plans its address and forgets those of
// removed imports. It reports whether the table changed.
func (t *clusterSetIPTable) allocate(plans map[string]*importPlan) (bool, error) {
	before := t.slots.snapshot()
	want := make(map[federation.ServiceKey]bool, len(plans))
	var errs []error
	for _, key := range sortedKeys(plans) {
		svc := plans[key].service()
		if svc.IsZero() {
			continue
		}
		want[svc] = true
		if _, err := t.slots.allocate(svc, ""); err != nil {
			errs = append(errs, fmt.Errorf("%s: ClusterSetIP from %s: %w", key, t.prefix, err))
		}
	}
	t.slots.retain(want)
	return !maps.Equal(before, t.slots.snapshot()), errors.Join(errs...)
}

func (t *clusterSetIPTable) clusterSetIPs() map[federation.ServiceKey][]netip.Addr {
	out := map[federation.ServiceKey][]netip.Addr{}
	for k, slot := range t.slots.snapshot() {
		out[k.service] = []netip.Addr{t.addr(slot)}
	}
	return out
}

// setClusterSetIPs tells the gateways to listen on each import's
// ClusterSetIP (the file source's, which nothing else serves). c is being
// built: its imports are not shared yet.
func (c *gatewayConfig) setClusterSetIPs(ips map[federation.ServiceKey][]netip.Addr) {
	for key, im := range c.imports {
		svc, err := federation.ParseServiceKey(key)
		if err != nil {
			continue
		}
		if a := ips[svc]; len(a) > 0 {
			im.ClusterSetIp = a[0].String()
		}
	}
}

// headlessDNSEndpoints lists a headless import's ready endpoints, from every
// exporting cluster the importer writes EndpointSlices for (all but those
// whose ports conflict with the oldest export's), as the zone names them
// (<hostname>.<cluster>.<svc>.<ns>.svc.clusterset.local). Addresses that do
// not parse, and clusters whose names do not, are left out: the hub
// checked both, so neither happens short of a bug.
func headlessDNSEndpoints(p *importPlan) []mcsdns.Endpoint {
	var out []mcsdns.Endpoint
	for _, c := range p.Clusters {
		if c.portConflict() {
			continue
		}
		cluster, err := federation.ParseClusterName(c.Cluster)
		if err != nil {
			continue
		}
		for _, ep := range c.Endpoints {
			if !ep.GetReady() {
				continue
			}
			e := mcsdns.Endpoint{Cluster: cluster, Hostname: ep.GetHostname()}
			for _, a := range ep.GetAddresses() {
				if addr, err := netip.ParseAddr(a); err == nil {
					e.Addrs = append(e.Addrs, addr)
				}
			}
			if len(e.Addrs) > 0 {
				out = append(out, e)
			}
		}
	}
	return out
}
