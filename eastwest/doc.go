// Package eastwest is meshfed's east-west gateway: it carries every byte
// that crosses a cluster boundary.
//
// A Gateway serves two sides from one QUIC transport (one UDP socket):
//
//   - Egress: a TCP listener per imported service port (the egress ports
//     the agent assigns, on Config.EgressBind), and one at the import's
//     ClusterSetIP on the service's own port when the agent sends one (the
//     file source with --clusterset-ips, as in meshfed dev). A TCP port is handled per connection; an HTTP/1.1,
//     h2c or gRPC port per request. Each connection or request goes to the
//     best cluster by locality priority (local endpoints, then the same
//     zone, the same region, the rest; weighted by ready endpoints within a
//     tier; spilling to the next tier as a tier's healthy share drops, as
//     Envoy does), over one stream of the pooled QUIC connection to one of
//     that cluster's gateways.
//   - Ingress: QUIC with mutual TLS by gateway SVIDs (package trust).
//     Only member clusters' gateways are admitted. Each stream starts with a
//     versioned, length-bounded header (see header.go); the gateway refuses
//     a service its cluster does not export, picks a ready local endpoint,
//     and answers a status before any payload flows. Then it pipes both
//     ways with half-close, backpressure and an idle timeout.
//
// Because the status comes first, a failure before anything reached the
// client (a dial failure, a refused stream, a non-OK status) moves on to
// the next candidate: no request fails because a remote cluster died
// between requests. Idempotent HTTP requests are also retried on 503 and
// on a reset stream.
//
// Traffic policies (federation/policy) are enforced here, each revision
// compiled once, the last good one kept when a revision is rejected (see
// policy.go): routes, weights, subsets, rewrites, retries, timeouts,
// faults and header operations at egress; locality settings and exclusions
// in the tiers; per-service outlier ejection and connection pool limits;
// authorization at ingress, answered to the caller as 403.
//
// Liveness needs no hub: every remote gateway gets one pooled QUIC
// connection, probed on a short interval; a probe unanswered twice takes
// it out of selection (see Config.ProbeInterval for the budget), and
// outlier detection ejects clusters and endpoints that fail requests.
//
// The gateway's config comes from its agent through gateway/gatewayclient;
// eastwest imports only the standard library, quic-go, Prometheus,
// federation, gateway and trust (deps_test.go checks it).
package eastwest
