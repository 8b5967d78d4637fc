package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/meshfed/meshfed/federation"
)

// ClusterIDProperty is the name of the ClusterProperty (KEP-2149,
// about.k8s.io/v1alpha1, cluster-scoped) whose spec.value is the
// cluster's ID in its ClusterSet.
const ClusterIDProperty = "cluster.clusterset.k8s.io"

var clusterPropertyGVR = schema.GroupVersionResource{Group: "about.k8s.io", Version: "v1alpha1", Resource: "clusterproperties"}

// ErrClusterIDMismatch is matched (errors.Is) by a *ClusterIDMismatchError:
// the cluster already has an ID, and it is not the cluster name the agent
// was given. Permanent: fix --cluster, or the ClusterProperty.
var ErrClusterIDMismatch = errors.New("agent: the cluster's ClusterProperty names another cluster")

// ClusterIDMismatchError names both values.
type ClusterIDMismatchError struct {
	Property string // the ClusterProperty's spec.value
	Cluster  string // Config.Cluster (--cluster)
}

func (e *ClusterIDMismatchError) Error() string {
	return fmt.Sprintf("agent: ClusterProperty %s says the cluster is %q, but --cluster is %q", ClusterIDProperty, e.Property, e.Cluster)
}

// Is reports whether target is ErrClusterIDMismatch.
func (e *ClusterIDMismatchError) Is(target error) bool { return target == ErrClusterIDMismatch }

// checkClusterID compares the cluster's ClusterProperty
// cluster.clusterset.k8s.io with cluster: a *ClusterIDMismatchError when
// they differ. With write, an absent property is created with the
// cluster's name. Without the ClusterProperty CRD there is no property to
// agree with: it logs that and returns nil.
func checkClusterID(ctx context.Context, dyn dynamic.Interface, cluster federation.ClusterName, write bool, log *slog.Logger) error {
	res := dyn.Resource(clusterPropertyGVR)
	for range 3 { // a racing creator: read what it wrote
		cp, err := res.Get(ctx, ClusterIDProperty, metav1.GetOptions{})
		if err == nil {
			v, _, err := unstructured.NestedString(cp.Object, "spec", "value")
			if err != nil {
				return fmt.Errorf("agent: ClusterProperty %s: spec.value: %w", ClusterIDProperty, err)
			}
			if v != cluster.String() {
				return &ClusterIDMismatchError{Property: v, Cluster: cluster.String()}
			}
			return nil
		}
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("agent: reading ClusterProperty %s: %w", ClusterIDProperty, err)
		}
		if !write {
			return nil
		}
		cp = &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": clusterPropertyGVR.GroupVersion().String(), "kind": "ClusterProperty",
			"metadata": map[string]any{"name": ClusterIDProperty, "labels": map[string]any{LabelManagedBy: ManagedByValue}},
			"spec":     map[string]any{"value": cluster.String()},
		}}
		_, err = res.Create(ctx, cp, metav1.CreateOptions{})
		switch {
		case err == nil:
			log.Info("wrote the cluster ID", "clusterProperty", ClusterIDProperty, "value", cluster.String())
			return nil
		case apierrors.IsNotFound(err):
			// The resource itself is not served.
			log.Warn("the ClusterProperty CRD (about.k8s.io) is not installed; the cluster ID is not recorded", "cluster", cluster.String())
			return nil
		case apierrors.IsAlreadyExists(err):
			continue
		default:
			return fmt.Errorf("agent: writing ClusterProperty %s: %w", ClusterIDProperty, err)
		}
	}
	return fmt.Errorf("agent: ClusterProperty %s: created and deleted concurrently", ClusterIDProperty)
}

// checkKubeClusterID runs checkClusterID against the cluster of the
// kubernetes source; with the file source there is no cluster to ask.
func checkKubeClusterID(ctx context.Context, cfg Config, write bool, log *slog.Logger) error {
	if cfg.Source != SourceKubernetes {
		return nil
	}
	rc, err := kubeRESTConfig(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("agent: kubernetes client: %w", err)
	}
	return checkClusterID(ctx, dyn, cfg.Cluster, write, log)
}

func discardIfNil(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
