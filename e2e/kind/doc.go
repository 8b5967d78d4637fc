// Package kind holds the cross-cluster stories against real kind clusters
// (`make e2e-kind`, after `make kind-up`): real pods, kube-proxy and
// CoreDNS, meshfed installed from deploy/. Its tests build only with the
// tag e2ekind, so `make test` (which creates no cluster) never runs them;
// scripts/kind/e2e.sh runs them against the clusters of scripts/kind/up.sh,
// found through their kubeconfigs in ~/.cache/meshfed/kind/clusters/.
//
//  1. TestPodInCentralCallsReviewsByClustersetName: a pod in central calls
//     reviews.default.svc.clusterset.local, resolved by CoreDNS (which
//     forwards the zone to central's agent), answered by east or west
//     through central's and their gateways.
//  2. TestDeletingEastsReviewsUnderLoadMovesTrafficToWest: under a steady
//     load from that pod, east's reviews Deployment is scaled to zero (its
//     pods deleted): every later call is answered by west, and none fails.
//  3. TestDeletingAGatewayPodFailsOver: under the same load, east's
//     gateway pod is deleted: while east has no gateway, west answers
//     every call, none fails, and east answers again once its new gateway
//     is up.
package kind
