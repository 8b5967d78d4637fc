// Package devenv runs meshfed's local development federation, the one
// `make dev` (meshfed dev) starts: a 3-server hub and three member clusters
// (east, west, central), each with an agent on a file catalog, an east-west
// gateway and sample workloads, all as real child processes of the meshfed
// binary on loopback. Traffic flows: default/reviews (HTTP, exported by
// east and west) and default/ratings (TCP echo, exported by central) are
// reachable from every cluster through its gateway's egress ports, and as
// in a cluster: each agent serves clusterset.local (Cluster.DNS), whose
// names resolve to per-import loopback addresses (Ports.ClusterSetIPs)
// where the cluster's gateway listens on the service's own port.
//
// Env (New, Run) prepares the state directory, starts every child in
// parallel, waits until the federation carries traffic, writes dev.json
// (see File) and supervises: a child that exits is restarted after a
// backoff (RestartPolicy), so killing one process is how users try
// failover. Cancelling Run's context stops every child (SIGTERM, then
// SIGKILL after Config.StopTimeout); on Linux children also die with the
// supervisor (Pdeathsig).
//
// RunWorkload is a sample workload: an HTTP server that answers every
// request with JSON naming its service, cluster, zone and instance, or a
// TCP echo server.
//
// The port plan is fixed relative to Config.BasePort (see Ports), so that
// running it again brings the same federation back from its data
// directories.
package devenv
