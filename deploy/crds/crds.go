// Package crds embeds the Kubernetes Multi-Cluster Services API CRDs
// (ServiceExport and ServiceImport, multicluster.x-k8s.io, served as v1alpha1
// and v1beta1, stored as v1beta1, which the agent uses; from
// sigs.k8s.io/mcs-api) that meshfed's agent needs, so that tools and
// testenv can install them without a checkout of this repository.
package crds

import "embed"

// FS holds the CRD manifests, one YAML file each.
//
//go:embed *.yaml
var FS embed.FS
