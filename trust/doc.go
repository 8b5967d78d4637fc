// Package trust gives each meshfed cluster its own SPIFFE trust domain: a
// CA issuing X509-SVIDs, rotation with overlap, federated bundle sets kept
// per trust domain, SPIFFE bundle endpoints (server and client) for
// federation with the wider SPIFFE ecosystem, and builders of *tls.Config
// that authenticate peers by SPIFFE ID. It is built on go-spiffe
// (spiffeid, bundle/x509bundle, bundle/spiffebundle, svid/x509svid,
// spiffetls/tlsconfig, workloadapi) and joins other packages with standard
// types: *tls.Config, http.Handler, x509svid.Source, x509bundle.Source and
// spiffebundle.Source. It imports nothing of meshfed but package federation.
//
// # Identities
//
// Every cluster is its own trust domain. By default it is
// "<cluster>.meshfed.local" (DefaultTrustDomain, from
// federation.TrustDomainFromCluster); clusters that already run SPIFFE
// configure theirs (ClusterTrustDomain picks). Within a trust domain TD,
// meshfed issues and recognizes exactly three shapes of SPIFFE ID:
//
//	spiffe://TD/ns/<namespace>/sa/<service-account>   a Kubernetes workload (KindWorkload)
//	spiffe://TD/meshfed/gateway                       the cluster's east-west gateways (KindGateway)
//	spiffe://TD/meshfed/agent                         the cluster's agent (KindAgent)
//
// Namespaces are RFC 1123 labels and service accounts RFC 1123 subdomains,
// as in Kubernetes. All gateways of a cluster share one identity: peers
// authorize a cluster's gateways, not a replica. WorkloadID, GatewayID and
// AgentID build IDs; Classify and ParseIdentity check and classify them.
//
// # The cluster CA
//
// A CA issues X509-SVIDs (default lifetime one hour) for IDs in this
// scheme: one URI SAN, not a CA, digitalSignature only, serverAuth and
// clientAuth. It signs through an Authority, the one key-source interface,
// with three implementations:
//
//   - RootAuthority: a root generated at first start and persisted through
//     a Store (FileStore here; the agent adds a Kubernetes Secret store),
//     rotated with overlap (below);
//   - IntermediateAuthority: an operator-provided intermediate (cert chain
//     and key PEM, checked: a CA with keyCertSign, its URI SAN in the trust
//     domain, valid now, verifying to the roots); SVIDs carry the chain, the
//     bundle holds the roots;
//   - WorkloadAPIAuthority: an existing SPIRE deployment through the SPIFFE
//     Workload API. It does not sign; the CA hands out SPIRE's SVIDs.
//
// An SVIDSource holds one identity's SVID and renews it at half-life (Run);
// it is the x509svid.Source the TLS builders read at every handshake.
//
// # Rotation
//
// RootAuthority.Rotate rotates in three phases, persisted so that a restart
// resumes them: (1) a new root is published in the bundle next to the old
// one while the old one still issues, for PrepareDuration (by default
// three refresh hints) so that every relying party has it before it
// signs; (2) issuance switches to the new root; (3) MaxSVIDTTL + ClockSkew
// after the switch, when every SVID of the old root has expired, the old
// root leaves the bundle. The bundle's sequence number increases at (1)
// and (3). A rotation also starts by itself when the active root has a
// quarter of its life left.
//
// The switch (2) may be gated: with MaxPrepareDuration above
// PrepareDuration, phase 1 lasts until the caller, having checked that
// every relying party holds the new root, calls Switch (refused with
// ErrSwitchTooEarly before PrepareDuration), and at most
// MaxPrepareDuration, when issuance switches anyway and Status reports
// SwitchedAtDeadline. The package does no I/O for the gate: the agent asks
// the hub which member clusters have applied the new bundle.
//
// # Federation
//
// A BundleSet holds one bundle per federated trust domain, never merged;
// it converts to and from the federation API's TrustBundle. ServerTLS and
// ClientTLS build TLS 1.3 mutual-TLS configurations that accept a peer only
// if its X509-SVID chains to the bundle of its own trust domain in the set,
// looked up live at every handshake (a withdrawn trust domain is refused
// from the next handshake on), and an authorizer (AuthorizeFederated,
// AuthorizeMemberOf, AuthorizeID, AuthorizeKind) allows its ID.
//
// BundleHandler and BundleSetHandler serve bundles in the SPIFFE Trust
// Bundle format under either endpoint profile (https_web with a Web PKI
// certificate, https_spiffe with BundleEndpointTLS). A Fetcher consumes
// another trust domain's endpoint with explicit trust domain, URL, profile
// and endpoint SPIFFE ID; it refreshes by the refresh hint, never follows
// redirects, and rejects another trust domain's bundle and a downgrade from
// https_spiffe to Web PKI.
package trust
