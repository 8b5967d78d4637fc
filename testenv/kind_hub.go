package testenv

import (
	"context"

	"github.com/meshfed/meshfed/testenv/kind"
)

// KindHub is the hub the kind backend runs in the first cluster: the
// StatefulSet of deploy/kustomize/hub (three servers) in meshfed-system.
type KindHub struct {
	kubeconfig string
}

// KindHub returns the hub in the first cluster with [BackendKind], else nil.
// (Options.HubServers starts hub processes on the host in addition; with
// the kind backend, leave it 0.)
func (f *Federation) KindHub() *KindHub {
	if f.backend != BackendKind || len(f.clusters) == 0 || f.clusters[0] == nil {
		return nil
	}
	return &KindHub{kubeconfig: f.clusters[0].kubeconfig}
}

// Command runs the meshfed CLI as the hub's operator inside the server
// meshfed-hub-0 (`kubectl exec`, with --config set to the admin.yaml it
// wrote at bootstrap) and returns its standard output; a non-zero exit is an
// error that carries the standard error.
//
//	out, err := fed.KindHub().Command(ctx, "clusters", "list", "-o", "json")
func (h *KindHub) Command(ctx context.Context, args ...string) ([]byte, error) {
	return kind.HubCommand(ctx, h.kubeconfig, args...)
}
