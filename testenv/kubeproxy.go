package testenv

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ServiceBackends is what kube-proxy would send a connection to addr to,
// when addr (ip:port) is a ClusterIP and port of a Service of the cluster:
// the ready endpoints of that Service port, found as kube-proxy finds them
// (the Service whose ClusterIPs hold ip, its port numbered port, the
// EndpointSlices labelled with the Service's name, their port of the same
// name). There is no kube-proxy in a testenv cluster, and a ClusterIP
// answers nothing; this is the step a client's packets would take.
//
// The addresses are host:port in the cluster's simulated pod network;
// [ClusterEnv.Loopback] maps them to where they are served. Use it with a
// name resolved by the agent's DNS server ([Agent.DNSAddr]): an import's
// ClusterSetIP is its derived Service's ClusterIP, whose endpoints are the
// cluster's gateway at the import's egress port.
func (c *ClusterEnv) ServiceBackends(ctx context.Context, addr string) ([]string, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("testenv: cluster %s: %q: want a ClusterIP and a port: %w", c.Name(), addr, err)
	}
	ip := ap.Addr().Unmap().String()
	svcs, err := c.clientset.CoreV1().Services(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, s := range svcs.Items {
		ips := s.Spec.ClusterIPs
		if len(ips) == 0 && s.Spec.ClusterIP != "" {
			ips = []string{s.Spec.ClusterIP}
		}
		if !slices.Contains(ips, ip) {
			continue
		}
		i := slices.IndexFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == int32(ap.Port()) })
		if i < 0 {
			return nil, fmt.Errorf("testenv: cluster %s: Service %s/%s (ClusterIP %s) has no port %d", c.Name(), s.Namespace, s.Name, ip, ap.Port())
		}
		portName := s.Spec.Ports[i].Name
		sl, err := c.clientset.DiscoveryV1().EndpointSlices(s.Namespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + s.Name})
		if err != nil {
			return nil, err
		}
		var out []string
		for _, es := range sl.Items {
			for _, p := range es.Ports {
				name := ""
				if p.Name != nil {
					name = *p.Name
				}
				if name != portName || p.Port == nil {
					continue
				}
				for _, e := range es.Endpoints {
					if e.Conditions.Ready != nil && !*e.Conditions.Ready {
						continue
					}
					for _, a := range e.Addresses {
						out = append(out, net.JoinHostPort(a, strconv.Itoa(int(*p.Port))))
					}
				}
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("testenv: cluster %s: Service %s/%s port %d has no ready endpoints", c.Name(), s.Namespace, s.Name, ap.Port())
		}
		return out, nil
	}
	return nil, fmt.Errorf("testenv: cluster %s: no Service has ClusterIP %s", c.Name(), ip)
}
