package devenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/meshfed/meshfed/agent"
	"github.com/meshfed/meshfed/internal/wait"
)

// httpc is the client of every readiness check: short timeouts, no
// pooled connections left behind.
var httpc = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// waitReady returns once the federation carries traffic: every hub server
// ready; in every cluster the agent connected and importing every sample
// service from every cluster that exports it, with egress ports; the
// gateway ready; and one request through each egress answered. The checks
// run in parallel.
func (e *Env) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	check := func(fn func(context.Context) error) {
		wg.Go(func() {
			if err := fn(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				cancel()
			}
		})
	}
	check(func(ctx context.Context) error {
		if err := wait.Poll(ctx, pollBackoff, "the hub", e.hubReady); err != nil {
			return err
		}
		e.log.Info("hub ready", "after", e.since())
		return nil
	})
	for _, cr := range e.clusters {
		check(func(ctx context.Context) error { return e.clusterReady(ctx, cr) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// hubReady checks that admin.yaml exists, then that the servers' metrics
// show a leader with every server applied up to its index, and only then
// every server's /readyz: a server caches each /readyz answer for a
// second, a negative one too, so asking it before it can be ready delays
// the start by up to that second.
func (e *Env) hubReady(ctx context.Context) error {
	if _, err := os.Stat(e.adminConfig()); err != nil {
		return err
	}
	if err := e.hubCaughtUp(ctx); err != nil {
		return err
	}
	for i := range Servers {
		if err := getOK(ctx, "http://"+loopback(e.ports.Server(i).HTTP)+"/readyz"); err != nil {
			return fmt.Errorf("s%d: %w", i, err)
		}
	}
	return nil
}

// The hub's gauges hubCaughtUp reads from each server's /metrics.
const (
	metricLeader  = "meshfed_hub_raft_leader"
	metricApplied = "meshfed_hub_raft_applied_index"
)

// hubCaughtUp checks, from the servers' /metrics (never cached), that one
// server is the Raft leader and every server has applied what the leader
// has applied.
func (e *Env) hubCaughtUp(ctx context.Context) error {
	applied := make([]float64, Servers)
	leader := -1
	for i := range Servers {
		body, err := get(ctx, "http://"+loopback(e.ports.Server(i).HTTP)+"/metrics")
		if err != nil {
			return fmt.Errorf("s%d: %w", i, err)
		}
		g := gauges(body, metricLeader, metricApplied)
		if g[metricLeader] == 1 {
			leader = i
		}
		applied[i] = g[metricApplied]
	}
	if leader < 0 {
		return fmt.Errorf("no server is the Raft leader yet (%s)", metricLeader)
	}
	for i, a := range applied {
		if a == 0 || a < applied[leader] {
			return fmt.Errorf("s%d: applied index %v, the leader s%d's %v", i, a, leader, applied[leader])
		}
	}
	return nil
}

// gauges returns the values of the named metrics without labels from a
// Prometheus text exposition ("name value" lines).
func gauges(body []byte, names ...string) map[string]float64 {
	m := map[string]float64{}
	for line := range bytes.Lines(body) {
		f := strings.Fields(string(line))
		if len(f) != 2 || !slices.Contains(names, f[0]) {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			m[f[0]] = v
		}
	}
	return m
}

// clusterReady waits for the cluster's agent, then its gateway, then one
// answer through each egress.
func (e *Env) clusterReady(ctx context.Context, cr *clusterRun) error {
	name := cr.spec.name.String()
	var egress map[string]string
	if err := wait.Poll(ctx, pollBackoff, name+"'s agent", func(ctx context.Context) error {
		var err error
		egress, err = e.agentImports(ctx, cr)
		return err
	}); err != nil {
		return err
	}
	e.mu.Lock()
	cr.egress = egress
	e.mu.Unlock()
	e.log.Info("agent ready", "cluster", name, "after", e.since())
	if err := wait.Poll(ctx, pollBackoff, name+"'s gateway", func(ctx context.Context) error {
		return getOK(ctx, "http://"+loopback(cr.ports.Metrics)+"/readyz")
	}); err != nil {
		return err
	}
	e.log.Info("gateway ready", "cluster", name, "after", e.since())
	for _, s := range services {
		addr := egress[EgressKey(s.key, s.port)]
		if err := wait.Poll(ctx, pollBackoff, fmt.Sprintf("%s through %s's egress %s", s.key, name, addr), func(ctx context.Context) error {
			return probe(ctx, s, addr)
		}); err != nil {
			return err
		}
		e.log.Info("answered through the egress", "cluster", name, "service", s.key, "egress", addr, "after", e.since())
	}
	// As in a cluster: the name resolves (the agent's DNS) to the
	// ClusterSetIP, where the gateway answers on the service's own port.
	csIPs := map[string]string{}
	for _, s := range services {
		var ip netip.Addr
		fqdn := s.key.Name() + "." + s.key.Namespace() + ".svc.clusterset.local."
		if err := wait.Poll(ctx, pollBackoff, fmt.Sprintf("%s through %s's DNS and ClusterSetIP", fqdn, name), func(ctx context.Context) error {
			var err error
			if ip, err = ResolveA(ctx, loopback(cr.ports.DNS), fqdn); err != nil {
				return err
			}
			return probe(ctx, s, net.JoinHostPort(ip.String(), strconv.Itoa(int(s.port))))
		}); err != nil {
			return err
		}
		csIPs[s.key.String()] = ip.String()
		e.log.Info("answered at the ClusterSetIP", "cluster", name, "service", s.key, "ip", ip, "after", e.since())
	}
	e.mu.Lock()
	cr.csIPs = csIPs
	e.mu.Unlock()
	return nil
}

// ResolveA asks the DNS server at addr (UDP) for name's A record and
// returns its one address.
func ResolveA(ctx context.Context, addr, name string) (netip.Addr, error) {
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, _, err := c.ExchangeContext(ctx, m, addr)
	if err != nil {
		return netip.Addr{}, err
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		return netip.Addr{}, fmt.Errorf("%s A: %s with %d answers, want one address", name, dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	a, ok := r.Answer[0].(*dns.A)
	if !ok {
		return netip.Addr{}, fmt.Errorf("%s A: answered %v", name, r.Answer[0])
	}
	ip, _ := netip.AddrFromSlice(a.A)
	return ip.Unmap(), nil
}

// agentImports reads the agent's /state and returns its egress addresses
// once it is connected to the hub and imports every sample service from
// every cluster exporting it, with all their instances ready.
func (e *Env) agentImports(ctx context.Context, cr *clusterRun) (map[string]string, error) {
	body, err := get(ctx, "http://"+loopback(cr.ports.AgentHTTP)+"/state")
	if err != nil {
		return nil, err
	}
	var st agent.State
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("/state: %w", err)
	}
	if !st.Hub.Connected {
		return nil, errors.New("not connected to the hub")
	}
	egress := map[string]string{}
	for _, s := range services {
		var found bool
		var ready map[string]uint32
		var port int
		for _, p := range st.Imports {
			if p.Key != s.key.String() {
				continue
			}
			found, ready, port = true, map[string]uint32{}, p.Egress[s.portName]
			for _, c := range p.Clusters {
				ready[c.Cluster] = c.Ready
			}
		}
		if !found {
			return nil, fmt.Errorf("no import of %s yet", s.key)
		}
		for _, c := range topology {
			for _, ex := range c.exports {
				if ex.svc.key == s.key && int(ready[c.name.String()]) < ex.instances {
					return nil, fmt.Errorf("the import of %s has %d ready endpoints from %s, want %d", s.key, ready[c.name.String()], c.name, ex.instances)
				}
			}
		}
		if port == 0 {
			return nil, fmt.Errorf("no egress port for %s port %s yet", s.key, s.portName)
		}
		egress[EgressKey(s.key, s.port)] = loopback(port)
	}
	return egress, nil
}

// probe sends one request to s through addr: an HTTP GET answered with a
// Reply of s, or bytes echoed back.
func probe(ctx context.Context, s service, addr string) error {
	if s.kind == KindHTTP {
		body, err := get(ctx, "http://"+addr+"/meshfed-dev/ready")
		if err != nil {
			return err
		}
		var r Reply
		if err := json.Unmarshal(body, &r); err != nil {
			return fmt.Errorf("answer %q: %w", body, err)
		}
		if r.Service != s.key.String() {
			return fmt.Errorf("answered by %q, want %s", r.Service, s.key)
		}
		return nil
	}
	return Echo(ctx, addr, []byte("meshfed dev ready "+strconv.FormatInt(time.Now().UnixNano(), 10)+"\n"))
}

// Echo sends msg over a TCP connection to addr and checks the same bytes
// come back.
func Echo(ctx context.Context, addr string, msg []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read the echo: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echoed %q, want %q", got, msg)
	}
	return nil
}

func get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpc.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

func getOK(ctx context.Context, url string) error {
	_, err := get(ctx, url)
	return err
}

// since is the time since Run started, rounded for logs.
func (e *Env) since() time.Duration { return time.Since(e.started).Round(time.Millisecond) }
