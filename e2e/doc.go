// Package e2e is meshfed's end-to-end suite: the stories users come for,
// each proved by one test against real processes (etcd and kube-apiserver
// per cluster, `meshfed hub`, `meshfed agent` and `meshfed gateway`, on
// loopback, with simulated WAN links), stood up by
// [github.com/meshfed/meshfed/testenv]. `make e2e` runs it; `make test`
// runs it with everything else. docs/testing.md ("End-to-end suite") has
// the figures.
//
//  1. Join: TestJoinFederatesTheClusterAndRefusesAReplayedToken. `meshfed
//     token create`, then `meshfed join` for east and west: each appears
//     in `meshfed clusters list`, connected, and the other member applied
//     its trust bundle (`meshfed trust status`). A replayed token is
//     refused, and nothing changes.
//  2. Cross-cluster calls: TestCrossClusterCallsThroughClustersetNames.
//     Central calls reviews over HTTP and east calls ratings over TCP by
//     their clusterset.local names, resolved by a DNS client against the
//     cluster's agent.
//  3. Cross-cluster failover: TestCrossClusterFailoverUnderLoad. Under a
//     steady load from central: east's reviews workloads are killed, then
//     west's gateway, with no request failing; then west's gateway is
//     blackholed, and the time the traffic takes to leave it is logged.
//  4. Global traffic policy: TestGlobalTrafficPolicySplits90To10. `meshfed
//     policy apply` with the 90/10 document; central's calls split 90/10
//     between east and west over 2000 requests.
//  5. Hub down: TestHubDownLosesNoRequestAndChurnsNothing. Every hub
//     server is SIGKILLed under a steady load for 5 s and more: no request
//     fails; after the restart nothing is rewritten (no write to the
//     import objects, nothing but the hub's state on the gateway config
//     stream).
//  6. Hub leader killed: TestHubLeaderKilledWhilePoliciesChange. The
//     leader is SIGKILLed 3 times while `meshfed policy apply` runs in a
//     loop: every apply succeeds or fails retriably, and every gateway
//     enforces the last applied revision.
//  7. Security: TestSecurity. An unfederated gateway (and one forging a
//     member's SVID) is refused at the handshake; an agent credential
//     cannot open the hub's Sync stream as another cluster, so cannot
//     publish for it; a stream for a service the cluster does not export
//     gets CodeUnknownService.
//
// Elsewhere, closer to the parts, the same stories have narrower tests
// that this suite does not repeat: testenv's TestGatewaysCarryTrafficAndFailOver
// (a gateway restarted with its agent down serves from its cache) and
// TestPoliciesAreEnforcedAcrossTheFederation (every policy feature through
// real gateways), the hub's TestJepsen, agent's
// TestLeaderDeathStandbyTakesOverWithoutImportChurn, and eastwest's
// ingress tests.
//
// The stories share federations where sharing does not weaken them, to
// keep the suite within its time budget: traffic (one hub server; east,
// west, central) serves stories 2, 3 and 4; hubs (three hub servers;
// east, central) serves stories 5, 6 and 7; story 1 needs clusters that
// have not joined, and stands up its own. One federation runs at a time
// (two would share egress ports): a shared one is started by the first
// test that needs it and closed when a test needs another, or after the
// last test; the files are named in story order, the order go test runs
// them, so each starts once. A story repairs what it breaks (in
// t.Cleanup) and waits for the healthy baseline before it starts, so the
// stories also run in any order and alone (go test ./e2e -run TestName).
package e2e
