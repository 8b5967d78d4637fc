// Package kwok pins kwok (sigs.k8s.io/kwok), the simulator of nodes and pod
// lifecycles that testenv clusters run on request (testenv.Cluster.Pods). It
// is a separate module so that kwok's dependencies never enter meshfed's own
// go.mod nor the tools module of the Kubernetes binaries (tools/testenv);
// scripts/kwok-bin.sh builds the binary from it into a cache, with kwok's own
// stock stages as its configuration.
package kwok
