package policy

// Destinations returns every distinct destination (cluster and subset;
// Weight is 0) the policy's HTTP and TCP routes name, in route order. A
// route without destinations names the service as a whole (the zero
// destination). A gateway precomputes a view of the service for each.
func (c *Compiled) Destinations() []WeightedDestination {
	var out []WeightedDestination
	seen := map[WeightedDestination]bool{}
	add := func(w *weighted) {
		for _, d := range w.dests {
			k := WeightedDestination{Cluster: d.Cluster, Subset: d.Subset}
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	for i := range c.http {
		add(&c.http[i].dests)
	}
	for i := range c.tcp {
		add(&c.tcp[i].dests)
	}
	return out
}

// WeightedDestinations returns the rule's destinations without copying:
// the slice points into the compiled policy and must not be modified.
// For the data plane's per-request use; Destinations copies.
func (r *HTTPRule) WeightedDestinations() []WeightedDestination { return r.dests.dests }

// WeightedDestinations returns the rule's destinations without copying,
// as HTTPRule.WeightedDestinations.
func (r *TCPRule) WeightedDestinations() []WeightedDestination { return r.dests.dests }
