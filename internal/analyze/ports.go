package analyze

import (
	"fmt"
	"slices"
	"strings"
)

// ports compares the ports of a service's exports (MF0010, MF0011).
// Clients reach a global service on one set of ports whichever cluster
// serves them, so every exporting cluster should export each port, by
// number, with the same name, protocol and appProtocol.
func (a *analyzer) ports(svc *Service) {
	if len(svc.Exports) < 2 {
		return
	}
	res := "Service " + svc.Key.String()
	type seen struct {
		cluster string
		port    Port
	}
	byNumber := make(map[uint32][]seen)
	for _, e := range svc.Exports {
		for _, p := range e.Ports {
			byNumber[p.Port] = append(byNumber[p.Port], seen{e.Cluster.String(), p})
		}
	}
	numbers := make([]uint32, 0, len(byNumber))
	for n := range byNumber {
		numbers = append(numbers, n)
	}
	slices.Sort(numbers)
	for _, n := range numbers {
		s := byNumber[n]
		path := fmt.Sprintf("ports[%d]", n)
		// Group the clusters by how they export the port.
		var variants []string
		clusters := make(map[string][]string)
		for _, x := range s {
			v := portString(x.port)
			if _, ok := clusters[v]; !ok {
				variants = append(variants, v)
			}
			clusters[v] = append(clusters[v], x.cluster)
		}
		if len(variants) > 1 {
			parts := make([]string, len(variants))
			for i, v := range variants {
				parts[i] = v + " in " + list(clusters[v])
			}
			a.add(PortConflict, res, path, "port %d is exported differently: %s; callers reach different protocols depending on the cluster that serves them", n, strings.Join(parts, "; "))
		}
		if len(s) < len(svc.Exports) {
			var have, lack []string
			for _, e := range svc.Exports {
				if slices.ContainsFunc(s, func(x seen) bool { return x.cluster == e.Cluster.String() }) {
					have = append(have, e.Cluster.String())
				} else {
					lack = append(lack, e.Cluster.String())
				}
			}
			a.add(PortMissing, res, path, "port %d (%s) is exported by %s but not by %s: connections to it fail when those clusters serve them", n, portString(s[0].port), list(have), list(lack))
		}
	}
}

// portString writes a port as name/protocol[/appProtocol].
func portString(p Port) string {
	s := fmt.Sprintf("name %q, protocol %s", p.Name, p.Protocol)
	if p.AppProtocol != "" {
		s += ", appProtocol " + p.AppProtocol
	}
	return s
}
