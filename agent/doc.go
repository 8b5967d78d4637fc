// Package agent is meshfed's presence in a member cluster. It joins the
// federation with a one-time token (Join), then runs (New + Run): it keeps
// one Sync stream open to some hub server, publishes what the cluster
// exports, keeps a revisioned copy of the hub's state on disk, and
// materializes what other clusters export as local imports.
//
// # Join
//
// Join pins the hub CA by the token's fingerprint, creates the cluster's CA
// root (trust.RootAuthority; trust domain <cluster>.meshfed.local), sends
// the locality, the trust bundle, a CSR and capabilities, and stores the
// issued client certificate. With the file source credentials and root are
// files in the data directory (credentials.yaml, ca/root.pem, 0600); with
// the kubernetes source they are the Secrets meshfed-agent-credentials and
// meshfed-cluster-ca in namespace meshfed-system. Nothing is stored unless
// the hub accepted the join, so a refused token changes nothing. Transient
// refusals (Unavailable, ResourceExhausted, a timed-out attempt) are retried
// with the same CSR within JoinTimeout: the hub answers a retry of a join
// that went through with the same certificate. The trust
// domain can be chosen at join (Config.TrustDomain); Config.HubAddresses
// replaces the hub addresses of the token and credentials (a hub behind a
// proxy or load balancer), the CA pin still applies.
//
// A restart needs only the stored credentials: WithStoredIdentity takes the
// cluster name from them, and refuses a Config whose Cluster or TrustDomain
// names another (ErrIdentityMismatch, an *IdentityMismatchError naming both
// values). Config.Locality is optional after join: when set it is stated in
// every Sync hello and the hub records a change; when zero the hello states
// none and the hub keeps its record, which the gateways are then told.
//
// # Hub credentials
//
// The client certificate lives as long as the hub says (AgentCertTTL, 30
// days by default) and is renewed at half-life, NotBefore plus half the
// validity of the certificate held, with Sync.Renew over a connection
// authenticated by that certificate. The renewal's new key is stored with
// the credentials (renewalKey) before the first call, so every retry, even
// after a restart, asks for the same key, and the hub answers a retry whose
// response was lost with the certificate it already issued. Failures are
// retried with jittered exponential backoff (ReconnectMin up to
// ReconnectMax, at most an eighth of the lifetime). The renewed credentials
// replace the stored ones atomically (a temporary file renamed over
// credentials.yaml, or one Secret update); then the Sync stream and its
// connection are closed and reopened with the new certificate, which the
// hub now requires. A certificate that expired before it could be renewed
// is refused by the hub: the cluster must be removed and join again.
//
// # Sync
//
// The agent dials every hub address round-robin with its client
// certificate, says hello with the revision it last applied, and applies
// SyncDeltas whole: the messages of a split delta are buffered until the
// one carrying the revision, so its view never holds half a reset. After
// each delta the view is written to <data-dir>/hubstate.pb ("MFHS", a
// format version byte, then the view as one reset SyncDelta). A lost stream
// is reopened against any server with exponential backoff and full jitter,
// resuming from the last revision. gRPC keepalive (10 s, 5 s timeout)
// notices a hub that went silent behind a partition.
//
// Exports are published with PublishExports: changes are debounced
// (Config.Debounce), at most one update per service is in flight, a
// message holds at most MaxPublishBatch changes and MaxPublishBytes bytes,
// and what the hub already holds (its view of this cluster's exports) is
// not sent again. The cluster's trust bundle is published with
// PublishBundle whenever it differs from the hub's copy.
//
// Connected means heard from recently. A hub that negotiates
// sync.heartbeat states its heartbeat interval in the hello and sends
// heartbeats while the serving server is healthy (a ready leader, or a
// follower in contact with the leader). The agent counts itself connected
// only while the stream is synced and the server sent something within
// federation.HeartbeatMisses (3) intervals (6 s with the hub's default
// 2 s); past that it ends the stream and reconnects, to another server if
// this one is frozen, partitioned or cut off from the leader. Status,
// /state (hub.connected, hub.lastHeardAgoMs, hub.heartbeatBoundMs), the
// metrics meshfed_agent_hub_connected and
// meshfed_agent_hub_last_heard_seconds, the gateways' hub state and the
// ServiceExports' Synced condition all read that one rule. Against an older
// hub (no heartbeats) connected means a synced stream is open.
//
// # Removal
//
// When the hub refuses the cluster as no longer a member (gRPC
// PermissionDenied with google.rpc.ErrorInfo reason CLUSTER_REMOVED,
// matched on the reason, never the message), the agent stops syncing,
// empties its view (the gateways import nothing), removes every
// ServiceImport, Service and EndpointSlice it created (until a listing
// finds none left), deletes its cached hub state (file and ConfigMaps) so
// that a restart serves no stale imports, sets every ServiceExport's
// Synced condition to False with reason ClusterRemoved, logs it once, shows
// it in /state (hub.removed), and Run returns an error wrapping
// ErrClusterRemoved. `meshfed agent` then exits with status 1 and says how
// to rejoin (a new token and meshfed join); restarted, it meets the same
// refusal and exits again.
//
// # Static stability
//
// On start the cached view is loaded and imports are served from it before
// the hub answers; imports change only when a complete delta from the hub
// changes them, never because the hub is unreachable. The importer updates
// objects in place, so a hub that comes back with the same state causes no
// write at all. With the kubernetes source the view is also cached in
// ConfigMaps in the agent's namespace (a pod rescheduled without its data
// directory keeps it): meshfed-hub-state is an index (slot, chunk count,
// SHA-256, revision) and meshfed-hub-state-<slot>-<i> hold the gzipped
// state in chunks of 900 KiB, at most MaxHubStateChunks; a write goes to
// the slot the index does not name and then switches the index, at most
// once a second. At start the newer of the two caches wins.
//
// # Catalog sources
//
// The kubernetes source watches MCS ServiceExports
// (multicluster.x-k8s.io/v1beta1, the version the CRDs store), the
// Services they name and those Services' EndpointSlices (ports by name,
// zone from the endpoint or its node, labels from the endpoint's pod
// without per-pod ones such as pod-template-hash). Endpoints are merged
// per pod (its targetRef), so a dual-stack pod listed in an IPv4 and an
// IPv6 slice counts once and keeps both addresses. A headless Service
// (clusterIP None) is exported as headless, with every pod's hostname,
// addresses and target ports; the session affinity and its timeout, the
// IP families, internalTrafficPolicy and trafficDistribution, and the
// ServiceExport's exportedLabels and exportedAnnotations are exported
// too. Exports are checked with
// federationv1.ValidateExportedService, the hub's check. Each
// ServiceExport gets the MCS conditions Valid, Conflict (reasons
// PortConflict, TypeConflict, SessionAffinityConflict,
// SessionAffinityConfigConflict, InternalTrafficPolicyConflict,
// TrafficDistributionConflict, IPFamilyConflict, LabelsConflict,
// AnnotationsConflict, comma-separated) and Ready (Exported,
// Pending, Failed), and meshfed.io/Synced: True (Published) once the hub
// holds the export as the cluster has it, False with HubUnreachable while
// the agent is not connected (the hub keeps the last published state),
// Pending until the hub acknowledged a change, Invalid when Valid is
// False.
//
// The cluster's ID (KEP-2149) is the ClusterProperty
// cluster.clusterset.k8s.io (about.k8s.io/v1alpha1): Join refuses when it
// exists with another value than Config.Cluster (*ClusterIDMismatchError,
// ErrClusterIDMismatch), and Run checks it likewise and writes it when
// absent (with leader election, the leader writes it, once promoted).
// Without the CRD it is skipped with a warning.
//
// The file source polls a YAML file:
//
//	services:
//	- namespace: default          # RFC 1123 label
//	  name: reviews               # RFC 1123 label
//	  export: true                # published to the hub; false: local only
//	  ports:                      # 1 to 64
//	  - {name: http, port: 8080, protocol: HTTP, appProtocol: http}
//	  endpoints:                  # at most 4096
//	  - {address: 127.0.0.1:9001, zone: us-east-1a, labels: {version: v1}, ready: true}
//	  # address is host:port, the target of the first port; ports: {grpc: 9002}
//	  # gives the target of other ports by name
//	  # serving defaults to ready; terminating defaults to false
//	workloads:                    # optional, at most 100000: who calls from where
//	- {address: 127.0.0.1, namespace: shop, serviceAccount: checkout}
//
// Workloads (with the kubernetes source: every pod's IP and service
// account, from a trimmed Pod informer; see workloads.go) let gateways
// name the calling workload, for policies that authorize by service
// account.
//
// protocol is one of TCP, UDP, SCTP, HTTP, HTTP2, GRPC, TLS; port names are
// unique and required when a service has several ports. Unknown keys are
// rejected. An invalid file is rejected with the field path of the problem
// (e.g. services[1].ports[0].protocol) and the last good content keeps
// serving; the error shows in /state.
//
// # Imports
//
// MCS namespace sameness: namespace/name exported by any cluster is one
// global service. For each one whose namespace exists locally, in every
// cluster (the exporting ones too), the kubernetes importer writes a
// ServiceImport (v1beta1; the oldest export's type, ports, session
// affinity, internalTrafficPolicy and trafficDistribution; ips the
// derived Service's cluster IPs, ipFamilies theirs, none for Headless,
// whose ipFamilies are the oldest export's; labels and annotations the
// oldest ServiceExport's exportedLabels and exportedAnnotations, plus the
// agent's own, which win a clash; status.clusters lists every exporting
// cluster), a derived Service (meshfed-<name>; a ClusterIP one is
// PreferDualStack when the oldest export is dual-stack) and
// EndpointSlices. A ClusterSetIP import has one slice pointing at the
// gateways (Config.GatewayAddress as the fallback) with one egress port
// per service port, assigned from EgressPortMin..EgressPortMax and
// recorded in an annotation. A Headless import has a headless derived
// Service and one slice per exporting cluster and IP family, listing its
// pods' addresses and hostnames. Every slice carries
// multicluster.kubernetes.io/service-name,
// multicluster.kubernetes.io/source-cluster (the exporting cluster; this
// cluster for the gateway slice) and endpointslice.kubernetes.io/managed-by
// agent.meshfed.io. Everything it writes carries
// app.kubernetes.io/managed-by=meshfed-agent; nothing else is touched.
// Orphans are deleted at start. Conflicts follow KEP-1645 and v1beta1's
// reasons: ports (name, protocol, port), type, session affinity and its
// timeout, internal traffic policy (unset is Cluster), traffic
// distribution, the set of IP families of two headless exports (whose
// clients reach pods directly; unknown from older agents: no conflict),
// exported labels and exported annotations; the oldest
// export (lowest create_revision) wins. Every constituent export shows
// it: a cluster whose export conflicts with the oldest sets Conflict on
// its own ServiceExport, and the oldest's cluster sets it too, with the
// reasons of every younger export that conflicts. Only a port conflict
// keeps a younger export's endpoints out of the routes.
// With the file source imports exist only in the agent's state (/state)
// and the gateway config; their egress ports are kept in
// <data-dir>/egress-ports.json.
//
// # DNS
//
// With Config.DNSAddr (--dns-bind) the agent serves the MCS zone
// clusterset.local over UDP and TCP on one port (internal/mcsdns), rebuilt
// from every view it publishes, the cached one included, so it keeps
// answering with the hub down: <svc>.<ns>.svc.clusterset.local is A/AAAA
// for the import's ClusterSetIP, _<port>._<proto>.<svc>.<ns>.svc... is SRV
// for each named port, and a headless import's endpoints are
// <hostname>.<cluster>.<svc>.<ns>.svc... (dnsServices is where they join
// the zone). The ClusterSetIP is the derived Service's ClusterIP
// (kubernetes source), or, with the file source, an address from
// Config.ClusterSetIPs (--clusterset-ips) assigned like an egress port
// (lowest free, kept in <data-dir>/clusterset-ips.json, held back 5 minutes
// after its import went), on which the gateways also listen at the
// service's own ports (gatewayv1.Import.cluster_set_ip). Missing names are NXDOMAIN, missing types NODATA,
// both with the SOA (serial: the view's revision); other zones are
// REFUSED; before any view exists the server answers SERVFAIL. Records and
// negative answers live mcsdns.DefaultTTL (5 s), so a change is seen
// within seconds. UDP answers honour the client's EDNS0 buffer up to 1232
// bytes and are truncated (TC) beyond it, TCP carries the whole answer;
// TCP connections (256), their idle time and the query rate (50000/s,
// REFUSED beyond) are bounded. Metrics: meshfed_agent_dns_*.
//
// # Gateway API
//
// The agent runs the cluster's CA (trust.CA over the root, SVIDs of
// Config.SVIDTTL, renewed at half-life). A CA rotation (meshfed trust
// rotate) publishes the new root and switches to it only once every
// member cluster that counts has acknowledged the bundle holding it: the
// agent acknowledges the bundles it applies (Ack on the Sync stream), and
// during the prepare phase the rotating agent asks the hub
// (Sync.RotationStatus) every refresh hint and calls
// trust.RootAuthority.Switch. The root switches by itself after
// MaxPrepareFactor refresh hints; the agent then warns, naming the members
// that lacked the root (log, meshfed_agent_ca_switches_at_deadline_total,
// /state caRotation). It serves its gateways the
// meshfed.gateway.v1.Config service on Config.GatewayAPIAddr, over TLS
// with its own SVID (spiffe://<td>/meshfed/agent):
//
//   - SignSVID signs a gateway's CSR as spiffe://<td>/meshfed/gateway, for
//     Config.GatewaySVIDTTL (36 h by default, so a gateway outlives an
//     agent outage of half of it). The caller authenticates with a gateway
//     SVID of this cluster (renewal) or, the first time, in-cluster with a
//     token of Config.GatewayServiceAccount (checked by a TokenReview; the
//     bootstrap token is refused there) and with the file source with the
//     bootstrap token. The agent writes the gateways' bootstrap document
//     (cluster, trust domain, token, the cluster's bundle; see
//     gatewayclient.Bootstrap) to <data-dir>/gateway-bootstrap.json or the
//     Secret meshfed-gateway-bootstrap (key "data"), and rewrites it when
//     the bundle changes.
//   - Stream needs a gateway SVID of this cluster. It sends a snapshot,
//     then a delta whenever something changes, each with the stream's next
//     revision: this cluster (Self: name, locality, trust domain, the QUIC
//     ingress spec), imports with their egress ports and each exporting
//     cluster's endpoint groups, this cluster's exported services with
//     every endpoint (address, target ports, zone, labels, ready, serving,
//     terminating), the remote clusters (trust domain, locality, gateway
//     addresses, status), the policies, the federated bundles (the
//     cluster's own from its CA, fresher than the hub's during a
//     rotation), and the hub state (revision, connected, cached). Messages
//     carry at most 512 upserts; larger changes are split. Every replica
//     has its own stream (at most MaxGatewayStreams). Nothing is sent
//     before a hub state exists (synced or cached), so a gateway never
//     gets an empty config while a cache exists; with the hub gone the
//     last good config keeps being served, marked disconnected.
//   - Report records a replica's applied (or rejected) revision and health,
//     shown in /state and meshfed agent status.
//
// In-cluster, imports' EndpointSlices point at every ready gateway pod
// (Config.GatewaySelector); Config.GatewayAddress is the fallback. Package
// gateway/gatewayclient is the gateway's side; package eastwest the
// gateway.
//
// # Leader election
//
// With Config.LeaderElection (kubernetes source) several replicas run; the
// holder of a coordination.k8s.io Lease alone writes to the cluster and
// publishes to the hub, renews the agent certificate and rotates the CA.
// Standbys share the stored credentials and CA root read-only (re-read
// every 10 s), hold a read-only Sync stream, mirror the leader's egress
// ports and ClusterSetIPs, and serve the gateway API and DNS. A standby
// takes over within LeaseDuration + 4.4 × RetryPeriod of the leader's last
// renewal (14.4 s with the defaults: its polls are jittered up to 2.2 ×
// RetryPeriod) and finds everything already written.
// Run returns ErrLeadershipLost when a leader fails to renew the Lease.
// See leader.go.
//
// # HTTP
//
// /healthz, /readyz (a view exists: synced, or cached), /metrics
// (meshfed_agent_hub_connected, meshfed_agent_revision, ...) and /state
// (State as JSON, including the connected gateway replicas), on
// Config.HTTPAddr (loopback); Config.MetricsAddr serves /metrics alone
// where Prometheus scrapes it.
package agent
