// Package deploytest holds the tests of what deploy/ ships: the image's
// Dockerfile (checked statically: no Docker here), the kustomize
// directories, the Helm chart (rendered with the Helm Go library, no helm
// binary) and the Grafana dashboard. Every manifest is applied with
// server-side dry-run to a real kube-apiserver of testenv, the CRDs
// installed first, so the API server validates them; the dashboard's
// queries are checked against the metric names the hub, agent and gateway
// really export.
//
// It has no code outside its tests.
package deploytest
