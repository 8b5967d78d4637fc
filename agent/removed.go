package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/internal/wait"
)

// ErrClusterRemoved is returned (wrapped, with the hub's message) by Run
// when the hub refuses this cluster because it is no longer a member of
// the federation: an operator removed it. Before returning, the agent has
// stopped syncing, removed every ServiceImport, Service and EndpointSlice
// it created, deleted its cached hub state, and set the ServiceExports'
// Synced condition to False with reason ClusterRemoved. Rejoining takes a
// new token (meshfed join).
var ErrClusterRemoved = errors.New("agent: this cluster was removed from the federation")

// errHubSilent ends a Sync session whose server sent nothing, not even a
// heartbeat, within the bound; the agent reconnects.
var errHubSilent = errors.New("hub server silent")

// ReasonClusterRemoved is the Synced condition's reason on ServiceExports
// once the hub has refused the cluster as removed.
const ReasonClusterRemoved = "ClusterRemoved"

// clusterRemoved returns an ErrClusterRemoved if err is the hub's refusal
// of a non-member cluster (google.rpc.ErrorInfo reason CLUSTER_REMOVED),
// else nil.
func clusterRemoved(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == federation.ErrorDomain && info.GetReason() == federation.ReasonClusterRemoved {
			return fmt.Errorf("%w: %s", ErrClusterRemoved, st.Message())
		}
	}
	return nil
}

// removalReporter is implemented by sources that report, on the objects
// they read, that the cluster was removed (the kubernetes source's
// ServiceExport conditions). The agent calls markRemoved once, from the
// hub goroutine, before Run returns; it returns when the objects say so.
type removalReporter interface {
	markRemoved(ctx context.Context, msg string) error
}

// removeTimeout bounds the clean-up after a removal.
const removeTimeout = time.Minute

// leaveFederation is the agent's last act once the hub has refused the
// cluster as removed: it empties the view (so the gateways and the
// importer import nothing), removes what the importer created, deletes
// the caches a restart would serve from, reports the removal on the
// source's objects, logs it once and returns removed for Run to return.
func (a *Agent) leaveFederation(ctx context.Context, s *syncSession, removed error) error {
	a.log.Error("this cluster was removed from the federation: stopping, removing its imports; join again with a new token to rejoin", "err", removed)
	var imp *kubeImporter
	var src catalogSource
	a.update(func(s *agentStatus) {
		s.removed, s.lastErr, s.cached = removed.Error(), removed.Error(), false
		imp, src = s.importer, s.source
	})
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
	defer cancel()

	empty := newView()
	s.view = empty
	a.publishView(empty, s.egressF)
	var errs []error
	if err := s.file.remove(); err != nil {
		errs = append(errs, fmt.Errorf("removing the cached hub state: %w", err))
	}
	// The ConfigMap cache is deleted by Run once its writer has stopped
	// (clearRemovedCache).
	if imp != nil {
		// Stopped first, so that nothing it was writing from the old view
		// lands after the deletes.
		a.stopImporter()
		err := wait.Poll(ctx, wait.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}, "removing imports", imp.removeAll)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if rr, ok := src.(removalReporter); ok {
		if err := rr.markRemoved(ctx, removed.Error()); err != nil {
			errs = append(errs, fmt.Errorf("ServiceExport conditions: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		a.log.Error("cleaning up after the removal", "err", err)
		return fmt.Errorf("%w (clean-up incomplete: %v)", removed, err)
	}
	a.log.Info("imports removed; the agent stops")
	return removed
}

// clearRemovedCache deletes the hub state cached in ConfigMaps after a
// removal. Run calls it once every goroutine, the cache's writer among
// them, has returned, so no pending write can bring it back.
func (a *Agent) clearRemovedCache(removed error) error {
	if a.cmCache == nil {
		return removed
	}
	ctx, cancel := context.WithTimeout(context.Background(), removeTimeout)
	defer cancel()
	if err := a.cmCache.clear(ctx); err != nil {
		a.log.Error("removing the hub state cached in ConfigMaps", "err", err)
		return fmt.Errorf("%w (clean-up incomplete: removing the hub state cached in ConfigMaps: %v)", removed, err)
	}
	return removed
}
