package kind

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/meshfed/meshfed/internal/wait"
)

// FieldManager is the server-side apply field manager of everything the
// backend applies.
const FieldManager = "meshfed-testenv"

// Applier applies objects to one cluster with server-side apply, mapping
// kinds to resources through discovery. It is not safe for concurrent use.
type Applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

// NewApplier returns an Applier for the cluster cfg points at.
func NewApplier(cfg *rest.Config) (*Applier, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kind: discovery client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kind: dynamic client: %w", err)
	}
	return &Applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

// Apply server-side applies objs in order, forcing ownership of conflicting
// fields. An object of a namespaced kind without a namespace goes into
// "default". A kind the cached discovery does not know (a CRD applied
// since) is looked up again once.
func (a *Applier) Apply(ctx context.Context, objs ...*unstructured.Unstructured) error {
	for _, o := range objs {
		r, err := a.resource(o)
		if err != nil {
			return err
		}
		if _, err := r.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
			return fmt.Errorf("kind: apply %s: %w", describe(o), err)
		}
	}
	return nil
}

// Delete deletes an object; one that does not exist is not an error.
func (a *Applier) Delete(ctx context.Context, o *unstructured.Unstructured) error {
	r, err := a.resource(o)
	if err != nil {
		return err
	}
	if err := r.Delete(ctx, o.GetName(), metav1.DeleteOptions{}); err != nil && !isNotFound(err) {
		return fmt.Errorf("kind: delete %s: %w", describe(o), err)
	}
	return nil
}

func (a *Applier) resource(o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		a.mapper.Reset()
		m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, fmt.Errorf("kind: %s: %w", describe(o), err)
	}
	if m.Scope.Name() != meta.RESTScopeNameNamespace {
		return a.dyn.Resource(m.Resource), nil
	}
	ns := o.GetNamespace()
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	return a.dyn.Resource(m.Resource).Namespace(ns), nil
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// WaitEstablished waits until every named CustomResourceDefinition has the
// condition Established=True, then forgets the cached discovery so that
// their kinds can be applied.
func (a *Applier) WaitEstablished(ctx context.Context, timeout time.Duration, names ...string) error {
	err := poll(ctx, timeout, func(ctx context.Context) error {
		for _, n := range names {
			crd, err := a.dyn.Resource(crdResource).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !conditionTrue(crd, "Established") {
				return fmt.Errorf("customresourcedefinition %s: not Established", n)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kind: CRDs: %w", err)
	}
	a.mapper.Reset()
	return nil
}

// conditionTrue reports whether o's status.conditions has type typ with
// status "True".
func conditionTrue(o *unstructured.Unstructured, typ string) bool {
	conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if ok && m["type"] == typ && m["status"] == "True" {
			return true
		}
	}
	return false
}

func describe(o *unstructured.Unstructured) string {
	if ns := o.GetNamespace(); ns != "" {
		return fmt.Sprintf("%s %s/%s", o.GetKind(), ns, o.GetName())
	}
	return fmt.Sprintf("%s %s", o.GetKind(), o.GetName())
}

// poll calls cond until it returns nil, at most every 500 ms, for up to
// timeout. On timeout the error wraps the context's error and quotes cond's
// last error.
func poll(ctx context.Context, timeout time.Duration, cond func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return wait.Poll(ctx, wait.Backoff{Min: 20 * time.Millisecond, Max: 500 * time.Millisecond}, fmt.Sprintf("waiting %v", timeout), cond)
}
