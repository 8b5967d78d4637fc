package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"
	mcsinformers "sigs.k8s.io/mcs-api/pkg/client/informers/externalversions"
	mcslisters "sigs.k8s.io/mcs-api/pkg/client/listers/apis/v1alpha1"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// Condition reasons the kubernetes source sets on ServiceExports, beyond
// the MCS ones.
const (
	ReasonInvalidName         = "InvalidName"
	ReasonTooManyPorts        = "TooManyPorts"
	ReasonUnsupportedProtocol = "UnsupportedProtocol"
	ReasonInvalidExport       = "InvalidExport"
)

// kubeSource watches ServiceExports, Services and EndpointSlices. Informer
// callbacks only enqueue the namespace/name of the service concerned; one
// worker recomputes it, updates the ServiceExport's conditions, and hands
// the complete export set to the agent.
type kubeSource struct {
	log   *slog.Logger
	kube  kubernetes.Interface
	mcs   mcsclient.Interface
	queue workqueue.TypedRateLimitingInterface[types.NamespacedName]

	mu        sync.Mutex
	conflicts map[string]string
	invalid   map[string]string
}

var (
	_ catalogSource    = (*kubeSource)(nil)
	_ conflictReporter = (*kubeSource)(nil)
	_ sourceStatus     = (*kubeSource)(nil)
)

func newKubeSource(rc *rest.Config, log *slog.Logger) (*kubeSource, error) {
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	mc, err := mcsclient.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("mcs client: %w", err)
	}
	return &kubeSource{log: log, kube: kc, mcs: mc, conflicts: map[string]string{}, invalid: map[string]string{},
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName]())}, nil
}

func (s *kubeSource) status() sourceState {
	s.mu.Lock()
	defer s.mu.Unlock()
	inv := make(map[string]string, len(s.invalid))
	for k, v := range s.invalid {
		inv[k] = v
	}
	return sourceState{Kind: "kubernetes", Invalid: inv}
}

func (s *kubeSource) setConflicts(c map[string]string) {
	s.mu.Lock()
	old := s.conflicts
	s.conflicts = c
	s.mu.Unlock()
	for k, m := range c {
		if old[k] != m {
			s.enqueueKey(k)
		}
	}
	for k := range old {
		if _, ok := c[k]; !ok {
			s.enqueueKey(k)
		}
	}
}

func (s *kubeSource) enqueueKey(k string) {
	ns, name, ok := strings.Cut(k, "/")
	if ok {
		s.queue.Add(types.NamespacedName{Namespace: ns, Name: name})
	}
}

// enqueue is the informer callback for ServiceExports and Services (same
// namespace/name as the service).
func (s *kubeSource) enqueue(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, err := apimeta.Accessor(obj)
	if err != nil {
		return
	}
	s.queue.Add(types.NamespacedName{Namespace: m.GetNamespace(), Name: m.GetName()})
}

// enqueueSlice is the informer callback for EndpointSlices.
func (s *kubeSource) enqueueSlice(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, err := apimeta.Accessor(obj)
	if err != nil {
		return
	}
	if svc := m.GetLabels()[discoveryv1.LabelServiceName]; svc != "" {
		s.queue.Add(types.NamespacedName{Namespace: m.GetNamespace(), Name: svc})
	}
}

func handlers(add func(any), upd func(any)) cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(_, n any) { upd(n) }, DeleteFunc: add}
}

type kubeListers struct {
	exports  mcslisters.ServiceExportLister
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	nodes    corelisters.NodeLister
}

func (s *kubeSource) Run(ctx context.Context, update func(map[string]*fedv1.ExportedService)) error {
	defer s.queue.ShutDown()
	kf := informers.NewSharedInformerFactory(s.kube, 0)
	mf := mcsinformers.NewSharedInformerFactory(s.mcs, 0)
	seInf := mf.Multicluster().V1alpha1().ServiceExports()
	svcInf := kf.Core().V1().Services()
	esInf := kf.Discovery().V1().EndpointSlices()
	nodeInf := kf.Core().V1().Nodes()
	if _, err := seInf.Informer().AddEventHandler(handlers(s.enqueue, s.enqueue)); err != nil {
		return err
	}
	if _, err := svcInf.Informer().AddEventHandler(handlers(s.enqueue, s.enqueue)); err != nil {
		return err
	}
	if _, err := esInf.Informer().AddEventHandler(handlers(s.enqueueSlice, s.enqueueSlice)); err != nil {
		return err
	}
	l := kubeListers{exports: seInf.Lister(), services: svcInf.Lister(), slices: esInf.Lister(), nodes: nodeInf.Lister()}
	_ = nodeInf.Informer()
	kf.Start(ctx.Done())
	mf.Start(ctx.Done())
	defer kf.Shutdown()
	defer mf.Shutdown()
	for typ, ok := range kf.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache of %v did not sync", typ)
		}
	}
	for typ, ok := range mf.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache of %v did not sync (are the MCS CRDs installed?)", typ)
		}
	}
	exports := map[string]*fedv1.ExportedService{}
	// The first set is complete: every existing ServiceExport.
	all, err := l.exports.List(labelsEverything())
	if err != nil {
		return err
	}
	for _, se := range all {
		key := types.NamespacedName{Namespace: se.Namespace, Name: se.Name}
		if _, err := s.process(ctx, l, key, exports); err != nil && ctx.Err() == nil {
			s.log.Warn("service export", "key", key.String(), "err", err)
			s.queue.AddRateLimited(key) // retried by the worker below
		}
	}
	update(cloneExports(exports))
	go func() { <-ctx.Done(); s.queue.ShutDown() }()
	for {
		key, shutdown := s.queue.Get()
		if shutdown {
			return nil
		}
		changed, err := s.process(ctx, l, key, exports)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("service export", "key", key.String(), "err", err)
			s.queue.AddRateLimited(key)
		} else {
			s.queue.Forget(key)
		}
		s.queue.Done(key)
		if changed {
			update(cloneExports(exports))
		}
	}
}

func cloneExports(m map[string]*fedv1.ExportedService) map[string]*fedv1.ExportedService {
	out := make(map[string]*fedv1.ExportedService, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// process recomputes one service: its export (or none) and the conditions
// on its ServiceExport. It reports whether the export set changed.
func (s *kubeSource) process(ctx context.Context, l kubeListers, key types.NamespacedName, exports map[string]*fedv1.ExportedService) (bool, error) {
	k := key.Namespace + "/" + key.Name
	se, err := l.exports.ServiceExports(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		s.setInvalid(k, "")
		_, had := exports[k]
		delete(exports, k)
		return had, nil
	}
	if err != nil {
		return false, err
	}
	svc, reason, msg := s.build(l, se)
	s.mu.Lock()
	conflict := s.conflicts[k]
	s.mu.Unlock()
	s.setInvalid(k, msg)
	changed := false
	if svc != nil {
		old, had := exports[k]
		changed = !had || !exportEqual(old, svc)
		exports[k] = svc
	} else {
		_, changed = exports[k]
		delete(exports, k)
	}
	return changed, s.setConditions(ctx, se, reason, msg, conflict)
}

func (s *kubeSource) setInvalid(k, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if msg == "" {
		delete(s.invalid, k)
	} else {
		s.invalid[k] = msg
	}
}

// build converts a ServiceExport's Service and EndpointSlices into an
// export, or returns the reason and message of why it is invalid.
func (s *kubeSource) build(l kubeListers, se *mcsv1a1.ServiceExport) (*fedv1.ExportedService, string, string) {
	if _, err := federation.NewServiceKey(se.Namespace, se.Name); err != nil {
		return nil, ReasonInvalidName, err.Error()
	}
	svc, err := l.services.Services(se.Namespace).Get(se.Name)
	if err != nil {
		return nil, string(mcsv1a1.ServiceExportReasonNoService), fmt.Sprintf("service %s/%s not found", se.Namespace, se.Name)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, string(mcsv1a1.ServiceExportReasonInvalidServiceType), "ExternalName services cannot be exported"
	}
	if n := len(svc.Spec.Ports); n > maxPortsPerService {
		return nil, ReasonTooManyPorts, fmt.Sprintf("spec.ports: %d ports, at most %d", n, maxPortsPerService)
	}
	out := &fedv1.ExportedService{Namespace: se.Namespace, Name: se.Name}
	for i, p := range svc.Spec.Ports {
		proto, err := exportProtocol(p)
		if err != nil {
			return nil, ReasonUnsupportedProtocol, fmt.Sprintf("spec.ports[%d]: %v", i, err)
		}
		sp := &fedv1.ServicePort{Name: p.Name, Port: uint32(p.Port), Protocol: proto}
		if p.AppProtocol != nil {
			sp.AppProtocol = *p.AppProtocol
		}
		out.Ports = append(out.Ports, sp)
	}
	sl, err := l.slices.EndpointSlices(se.Namespace).List(labelsFor(discoveryv1.LabelServiceName, se.Name))
	if err != nil {
		return nil, ReasonInvalidExport, err.Error()
	}
	var eps []endpointHealth
	for _, es := range sl {
		for _, e := range es.Endpoints {
			h := endpointHealth{ready: e.Conditions.Ready == nil || *e.Conditions.Ready}
			h.serving = h.ready
			if e.Conditions.Serving != nil {
				h.serving = *e.Conditions.Serving
			}
			h.terminate = e.Conditions.Terminating != nil && *e.Conditions.Terminating
			switch {
			case e.Zone != nil:
				h.zone = *e.Zone
			case e.NodeName != nil:
				if n, err := l.nodes.Get(*e.NodeName); err == nil {
					h.zone = n.Labels[corev1.LabelTopologyZone]
				}
			}
			eps = append(eps, h)
		}
	}
	out.Endpoints = groupEndpoints(eps)
	if err := validateExport("spec", out); err != nil {
		return nil, ReasonInvalidExport, err.Error()
	}
	return out, "", ""
}

// exportProtocol maps a Service port to the federation's protocol: the
// appProtocol when it names one we carry, else TCP or UDP.
func exportProtocol(p corev1.ServicePort) (string, error) {
	if p.Protocol == corev1.ProtocolSCTP {
		return "", fmt.Errorf("protocol SCTP is not supported (TCP or UDP)")
	}
	if p.AppProtocol != nil && p.Protocol != corev1.ProtocolUDP {
		switch strings.ToLower(*p.AppProtocol) {
		case "http", "kubernetes.io/http":
			return "HTTP", nil
		case "http2", "h2c", "kubernetes.io/h2c":
			return "HTTP2", nil
		case "grpc":
			return "GRPC", nil
		case "tls", "https", "kubernetes.io/ws", "kubernetes.io/wss":
			if strings.ToLower(*p.AppProtocol) == "kubernetes.io/ws" {
				return "HTTP", nil
			}
			return "TLS", nil
		}
	}
	if p.Protocol == corev1.ProtocolUDP {
		return "UDP", nil
	}
	return "TCP", nil
}

// setConditions writes the Valid and Conflict conditions on the
// ServiceExport when they changed.
func (s *kubeSource) setConditions(ctx context.Context, se *mcsv1a1.ServiceExport, reason, msg, conflict string) error {
	next := se.DeepCopy()
	valid := metav1.Condition{Type: string(mcsv1a1.ServiceExportConditionValid), Status: metav1.ConditionTrue,
		Reason: string(mcsv1a1.ServiceExportReasonValid), Message: "exported by meshfed", ObservedGeneration: se.Generation}
	if reason != "" {
		valid.Status, valid.Reason, valid.Message = metav1.ConditionFalse, reason, truncateMsg(msg)
	}
	apimeta.SetStatusCondition(&next.Status.Conditions, valid)
	c := metav1.Condition{Type: string(mcsv1a1.ServiceExportConditionConflict), Status: metav1.ConditionFalse,
		Reason: string(mcsv1a1.ServiceExportReasonNoConflicts), Message: "no conflicts", ObservedGeneration: se.Generation}
	if conflict != "" {
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, string(mcsv1a1.ServiceExportReasonPortConflict), truncateMsg(conflict)
	}
	apimeta.SetStatusCondition(&next.Status.Conditions, c)
	if conditionsEqual(se.Status.Conditions, next.Status.Conditions) {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, err := s.mcs.MulticlusterV1alpha1().ServiceExports(se.Namespace).UpdateStatus(cctx, next, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func truncateMsg(s string) string {
	const max = 1024
	if len(s) > max {
		return s[:max]
	}
	return s
}

func conditionsEqual(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message || x.ObservedGeneration != y.ObservedGeneration {
			return false
		}
	}
	return true
}
