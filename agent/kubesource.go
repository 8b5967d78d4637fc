package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
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
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	mcsv1b1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"
	mcsinformers "sigs.k8s.io/mcs-api/pkg/client/informers/externalversions"
	mcslisters "sigs.k8s.io/mcs-api/pkg/client/listers/apis/v1beta1"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
	"github.com/meshfed/meshfed/internal/wait"
)

// Condition reasons the kubernetes source sets on ServiceExports, beyond
// the MCS ones.
const (
	ReasonInvalidName   = "InvalidName"
	ReasonTooManyPorts  = "TooManyPorts"
	ReasonInvalidExport = "InvalidExport"

	// ConditionSynced is meshfed's condition on a ServiceExport: True
	// once the hub holds the export as the cluster has it, False while
	// the agent is not connected to the hub (reason HubUnreachable; the
	// hub keeps serving the last published state) or the hub has not
	// acknowledged the current state yet (Pending), or the export is
	// invalid (Invalid), or the hub refused the cluster as removed
	// (ReasonClusterRemoved).
	ConditionSynced      = "meshfed.io/Synced"
	ReasonPublished      = "Published"
	ReasonPending        = "Pending"
	ReasonHubUnreachable = "HubUnreachable"
	ReasonInvalid        = "Invalid"
)

// kubeSource watches ServiceExports, Services and EndpointSlices. Informer
// callbacks only enqueue the namespace/name of the service concerned; one
// worker recomputes it, updates the ServiceExport's conditions, and hands
// the complete export set to the agent.
type kubeSource struct {
	log   *slog.Logger
	kube  kubernetes.Interface
	meta  metadata.Interface
	mcs   mcsclient.Interface
	queue workqueue.TypedRateLimitingInterface[types.NamespacedName]

	mu        sync.Mutex
	conflicts map[string]importConflict
	invalid   map[string]string
	connected bool
	published map[string]bool
	removed   string // why the hub refused the cluster, once it has

	// standby, when set, reports whether a conditions write must be
	// skipped because this replica does not lead (it remembers the key).
	standby func(key string) bool
}

var (
	_ catalogSource    = (*kubeSource)(nil)
	_ conflictReporter = (*kubeSource)(nil)
	_ syncReporter     = (*kubeSource)(nil)
	_ sourceStatus     = (*kubeSource)(nil)
	_ removalReporter  = (*kubeSource)(nil)
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
	md, err := metadata.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("metadata client: %w", err)
	}
	return &kubeSource{log: log, kube: kc, meta: md, mcs: mc, conflicts: map[string]importConflict{}, invalid: map[string]string{},
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

func (s *kubeSource) setConflicts(c map[string]importConflict) {
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

func (s *kubeSource) setSynced(connected bool, published map[string]bool) {
	s.mu.Lock()
	oldConn, old := s.connected, s.published
	s.connected, s.published = connected, published
	s.mu.Unlock()
	for k, p := range published {
		if connected != oldConn || old[k] != p {
			s.enqueueKey(k)
		}
	}
	for k := range old {
		if _, ok := published[k]; !ok {
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
	pods     cache.GenericLister // metadata only: endpoint labels come from pods
}

// enqueuePod is the pod informer's update callback: a pod's labels are its
// endpoint's labels, so a label change recomputes the services of its
// namespace that select it.
func (s *kubeSource) enqueuePod(l *kubeListers) func(old, obj any) {
	return func(old, obj any) {
		o, err1 := apimeta.Accessor(old)
		n, err2 := apimeta.Accessor(obj)
		if err1 != nil || err2 != nil || labelString(o.GetLabels()) == labelString(n.GetLabels()) {
			return
		}
		ses, err := l.exports.ServiceExports(n.GetNamespace()).List(labelsEverything())
		if err != nil {
			return
		}
		for _, se := range ses {
			s.queue.Add(types.NamespacedName{Namespace: se.Namespace, Name: se.Name})
		}
	}
}

func (s *kubeSource) Run(ctx context.Context, update func(catalog)) error {
	defer s.queue.ShutDown()
	kf := informers.NewSharedInformerFactory(s.kube, 0)
	mf := mcsinformers.NewSharedInformerFactory(s.mcs, 0)
	seInf := mf.Multicluster().V1beta1().ServiceExports()
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
	pf := metadatainformer.NewSharedInformerFactory(s.meta, 0)
	podInf := pf.ForResource(corev1.SchemeGroupVersion.WithResource("pods"))
	l := kubeListers{exports: seInf.Lister(), services: svcInf.Lister(), slices: esInf.Lister(), nodes: nodeInf.Lister(), pods: podInf.Lister()}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{UpdateFunc: s.enqueuePod(&l)}); err != nil {
		return err
	}
	_ = nodeInf.Informer()
	kf.Start(ctx.Done())
	mf.Start(ctx.Done())
	pf.Start(ctx.Done())
	defer kf.Shutdown()
	defer mf.Shutdown()
	defer pf.Shutdown()
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
	for typ, ok := range pf.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache of %v did not sync", typ)
		}
	}
	exports := newCatalog()
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
	update(exports.clone())
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
			update(exports.clone())
		}
	}
}

// process recomputes one service: its export (or none) and the conditions
// on its ServiceExport. It reports whether the export set changed.
func (s *kubeSource) process(ctx context.Context, l kubeListers, key types.NamespacedName, c catalog) (bool, error) {
	k := key.Namespace + "/" + key.Name
	se, err := l.exports.ServiceExports(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		s.setInvalid(k, "")
		_, had := c.exports[k]
		delete(c.exports, k)
		delete(c.local, k)
		return had, nil
	}
	if err != nil {
		return false, err
	}
	svc, local, reason, msg := buildExport(l, se)
	s.mu.Lock()
	conflict := s.conflicts[k]
	sync := syncState{connected: s.connected, published: s.published[k], removed: s.removed}
	s.mu.Unlock()
	s.setInvalid(k, msg)
	changed := false
	if svc != nil {
		old, had := c.exports[k]
		changed = !had || !exportEqual(old, svc) || !proto.Equal(c.local[k], local)
		c.exports[k] = svc
		c.local[k] = local
	} else {
		_, changed = c.exports[k]
		delete(c.exports, k)
		delete(c.local, k)
	}
	return changed, s.setConditions(ctx, se, reason, msg, conflict, sync)
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

// buildExport converts a ServiceExport's Service and EndpointSlices into
// an export and its local endpoints, or returns the reason and message of
// why it is invalid. The export carries what the ServiceImport copies from
// the Service (ports, type, session affinity, IP families, internal
// traffic policy, traffic distribution) and the ServiceExport's
// exportedLabels and exportedAnnotations. Endpoints are counted per pod: the IPv4 and the IPv6
// slice of a dual-stack Service list each pod twice, and it counts once.
func buildExport(l kubeListers, se *mcsv1b1.ServiceExport) (*fedv1.ExportedService, *gatewayv1.LocalService, string, string) {
	if _, err := federation.NewServiceKey(se.Namespace, se.Name); err != nil {
		return nil, nil, ReasonInvalidName, err.Error()
	}
	svc, err := l.services.Services(se.Namespace).Get(se.Name)
	if err != nil {
		return nil, nil, string(mcsv1b1.ServiceExportReasonNoService), fmt.Sprintf("service %s/%s not found", se.Namespace, se.Name)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, nil, string(mcsv1b1.ServiceExportReasonInvalidServiceType), "ExternalName services cannot be exported"
	}
	if n := len(svc.Spec.Ports); n > maxPortsPerService {
		return nil, nil, ReasonTooManyPorts, fmt.Sprintf("spec.ports: %d ports, at most %d", n, maxPortsPerService)
	}
	out := &fedv1.ExportedService{Namespace: se.Namespace, Name: se.Name}
	for _, p := range svc.Spec.Ports {
		sp := &fedv1.ServicePort{Name: p.Name, Port: uint32(p.Port), Protocol: exportProtocol(p)}
		if p.AppProtocol != nil {
			sp.AppProtocol = *p.AppProtocol
		}
		out.Ports = append(out.Ports, sp)
	}
	sl, err := l.slices.EndpointSlices(se.Namespace).List(labelsFor(discoveryv1.LabelServiceName, se.Name))
	if err != nil {
		return nil, nil, ReasonInvalidExport, err.Error()
	}
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		out.Headless = true
	}
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		out.SessionAffinity = string(corev1.ServiceAffinityClientIP)
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			out.SessionAffinityTimeoutSeconds = *c.ClientIP.TimeoutSeconds
		}
	}
	for _, f := range svc.Spec.IPFamilies {
		out.IpFamilies = append(out.IpFamilies, string(f))
	}
	if p := svc.Spec.InternalTrafficPolicy; p != nil {
		out.InternalTrafficPolicy = string(*p)
	}
	if d := svc.Spec.TrafficDistribution; d != nil {
		out.TrafficDistribution = *d
	}
	// The ServiceExport's own labels and annotations stay here; only what
	// it names for export goes to the ServiceImports.
	out.ExportedLabels = maps.Clone(se.Spec.ExportedLabels)
	out.ExportedAnnotations = maps.Clone(se.Spec.ExportedAnnotations)
	pods := mergePods(l, sl)
	local := &gatewayv1.LocalService{Service: se.Namespace + "/" + se.Name, Ports: out.Ports}
	eps := make([]endpointHealth, 0, len(pods))
	primaryV6 := len(svc.Spec.IPFamilies) > 0 && svc.Spec.IPFamilies[0] == corev1.IPv6Protocol
	for _, p := range pods {
		eps = append(eps, p.endpointHealth)
		// The gateways get each pod once, at its address of the
		// Service's primary family (the other when it has only that).
		addr := p.v4
		if addr == "" || (primaryV6 && p.v6 != "") {
			addr = p.v6
		}
		local.Endpoints = append(local.Endpoints, &gatewayv1.Endpoint{Address: addr, Ports: p.ports, Zone: p.zone, Labels: p.labels,
			Ready: p.ready, Serving: p.serving, Terminating: p.terminate})
		if out.Headless {
			he := &fedv1.HeadlessEndpoint{Hostname: p.hostname, Ready: p.ready, Serving: p.serving, Terminating: p.terminate, Zone: p.zone}
			for _, a := range []string{p.v4, p.v6} {
				if a != "" {
					he.Addresses = append(he.Addresses, a)
				}
			}
			if len(p.ports) > 0 {
				he.TargetPorts = make(map[string]uint32, len(p.ports))
				for _, tp := range p.ports {
					if slices.ContainsFunc(out.Ports, func(sp *fedv1.ServicePort) bool { return sp.GetName() == tp.GetName() }) {
						he.TargetPorts[tp.GetName()] = tp.GetPort()
					}
				}
			}
			out.HeadlessEndpoints = append(out.HeadlessEndpoints, he)
		}
	}
	slices.SortFunc(out.HeadlessEndpoints, func(a, b *fedv1.HeadlessEndpoint) int {
		return strings.Compare(a.GetAddresses()[0], b.GetAddresses()[0])
	})
	out.Endpoints = groupEndpoints(eps)
	if err := validateExport("spec", out); err != nil {
		return nil, nil, ReasonInvalidExport, err.Error()
	}
	local.Endpoints, _ = sortEndpoints(local.Endpoints)
	return out, local, "", ""
}

// kubePod is one backend of a Service, merged over its EndpointSlices.
type kubePod struct {
	endpointHealth
	v4, v6   string // its address of each family
	hostname string
	ports    []*gatewayv1.EndpointPort
}

// mergePods merges the endpoints of a Service's EndpointSlices by pod
// (the endpoint's targetRef; an endpoint without one is its own pod, by
// address). A pod is ready, serving or terminating only when every slice
// listing it says so. Slices are read sorted by name; FQDN slices are
// skipped. The result is in first-seen order.
func mergePods(l kubeListers, sl []*discoveryv1.EndpointSlice) []*kubePod {
	sl = slices.Clone(sl)
	slices.SortFunc(sl, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	byKey := map[string]*kubePod{}
	var out []*kubePod
	for _, es := range sl {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		var ports []*gatewayv1.EndpointPort
		for _, p := range es.Ports {
			if p.Port != nil && p.Name != nil {
				ports = append(ports, &gatewayv1.EndpointPort{Name: *p.Name, Port: uint32(*p.Port)})
			}
		}
		for _, e := range es.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			serving := ready
			if e.Conditions.Serving != nil {
				serving = *e.Conditions.Serving
			}
			terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			key := string(es.AddressType) + "/" + e.Addresses[0]
			if r := e.TargetRef; r != nil && r.Name != "" {
				key = r.Kind + "/" + r.Namespace + "/" + r.Name
			}
			p, seen := byKey[key]
			if !seen {
				p = &kubePod{endpointHealth: endpointHealth{ready: ready, serving: serving, terminate: terminating}, ports: ports}
				switch {
				case e.Zone != nil:
					p.zone = *e.Zone
				case e.NodeName != nil && l.nodes != nil:
					if n, err := l.nodes.Get(*e.NodeName); err == nil {
						p.zone = n.Labels[corev1.LabelTopologyZone]
					}
				}
				p.labels = podLabels(l, e.TargetRef)
				byKey[key] = p
				out = append(out, p)
			} else {
				p.ready = p.ready && ready
				p.serving = p.serving && serving
				p.terminate = p.terminate && terminating
			}
			if e.Hostname != nil && p.hostname == "" {
				p.hostname = *e.Hostname
			}
			addr := e.Addresses[0]
			if es.AddressType == discoveryv1.AddressTypeIPv6 {
				if p.v6 == "" {
					p.v6 = addr
				}
			} else if p.v4 == "" {
				p.v4 = addr
			}
		}
	}
	return out
}

// perInstanceLabels are set by controllers on every pod, with values that
// differ per pod or per rollout; they select no policy subset.
var perInstanceLabels = map[string]bool{
	"pod-template-hash":                  true,
	"controller-revision-hash":           true,
	"pod-template-generation":            true,
	"statefulset.kubernetes.io/pod-name": true,
	"apps.kubernetes.io/pod-index":       true,
	"batch.kubernetes.io/controller-uid": true,
	"batch.kubernetes.io/job-name":       true,
	"controller-uid":                     true,
	"job-name":                           true,
}

// podLabels returns the labels of the pod an endpoint refers to, cut to
// the labels limit (sorted keys first), or nil.
func podLabels(l kubeListers, ref *corev1.ObjectReference) map[string]string {
	if ref == nil || ref.Kind != "Pod" || l.pods == nil {
		return nil
	}
	obj, err := l.pods.ByNamespace(ref.Namespace).Get(ref.Name)
	if err != nil {
		return nil
	}
	m, err := apimeta.Accessor(obj)
	if err != nil || len(m.GetLabels()) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m.GetLabels()))
	for k, v := range m.GetLabels() {
		// Labels that name one pod or one rollout would make a group per
		// pod; labels the hub would refuse are left out rather than
		// failing the export.
		if !perInstanceLabels[k] && len(k) <= maxLabelKey && len(v) <= maxLabelValue {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	if len(keys) > maxLabels {
		keys = keys[:maxLabels]
	}
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		out[k] = m.GetLabels()[k]
	}
	return out
}

// exportProtocol maps a Service port to the federation's protocol: the
// appProtocol when it names one we carry over TCP, else TCP, UDP or SCTP.
func exportProtocol(p corev1.ServicePort) string {
	switch p.Protocol {
	case corev1.ProtocolSCTP, corev1.ProtocolUDP:
		return string(p.Protocol)
	}
	if p.AppProtocol != nil {
		switch strings.ToLower(*p.AppProtocol) {
		case "http", "kubernetes.io/http":
			return "HTTP"
		case "http2", "h2c", "kubernetes.io/h2c":
			return "HTTP2"
		case "grpc":
			return "GRPC"
		case "tls", "https", "kubernetes.io/ws", "kubernetes.io/wss":
			if strings.ToLower(*p.AppProtocol) == "kubernetes.io/ws" {
				return "HTTP"
			}
			return "TLS"
		}
	}
	return "TCP"
}

// syncState is what the Synced and Ready conditions show.
type syncState struct {
	connected, published bool
	removed              string
}

// setConditions writes the MCS conditions (Valid, Conflict with the
// KEP's reasons, Ready) and meshfed.io/Synced on the ServiceExport when
// they changed.

func (s *kubeSource) setConditions(ctx context.Context, se *mcsv1b1.ServiceExport, reason, msg string, conflict importConflict, sync syncState) error {
	next := se.DeepCopy()
	valid := metav1.Condition{Type: string(mcsv1b1.ServiceExportConditionValid), Status: metav1.ConditionTrue,
		Reason: string(mcsv1b1.ServiceExportReasonValid), Message: "exported by meshfed", ObservedGeneration: se.Generation}
	if reason != "" {
		valid.Status, valid.Reason, valid.Message = metav1.ConditionFalse, reason, truncateMsg(msg)
	}
	apimeta.SetStatusCondition(&next.Status.Conditions, valid)
	c := metav1.Condition{Type: string(mcsv1b1.ServiceExportConditionConflict), Status: metav1.ConditionFalse,
		Reason: string(mcsv1b1.ServiceExportReasonNoConflicts), Message: "no conflicts", ObservedGeneration: se.Generation}
	if conflict.Reason != "" {
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, conflict.Reason, truncateMsg(conflict.Message)
	}
	apimeta.SetStatusCondition(&next.Status.Conditions, c)
	sc := metav1.Condition{Type: ConditionSynced, Status: metav1.ConditionTrue, Reason: ReasonPublished,
		Message: "the hub has this export", ObservedGeneration: se.Generation}
	switch {
	case reason != "":
		sc.Status, sc.Reason, sc.Message = metav1.ConditionFalse, ReasonInvalid, "not published: see the Valid condition"
	case sync.removed != "":
		sc.Status, sc.Reason, sc.Message = metav1.ConditionFalse, ReasonClusterRemoved, truncateMsg(sync.removed)
	case !sync.connected:
		sc.Status, sc.Reason, sc.Message = metav1.ConditionFalse, ReasonHubUnreachable,
			"the agent is not connected to the hub; the hub keeps the last state published"
	case !sync.published:
		sc.Status, sc.Reason, sc.Message = metav1.ConditionFalse, ReasonPending, "waiting for the hub to acknowledge the current state"
	}
	apimeta.SetStatusCondition(&next.Status.Conditions, sc)
	// MCS Ready: True (Exported) once the hub holds the export as the
	// cluster has it; False, Failed when it is invalid or the cluster was
	// removed, else Pending.
	rc := metav1.Condition{Type: string(mcsv1b1.ServiceExportConditionReady), Status: metav1.ConditionTrue,
		Reason: string(mcsv1b1.ServiceExportReasonExported), Message: "the hub has this export", ObservedGeneration: se.Generation}
	switch {
	case reason != "" || sync.removed != "":
		rc.Status, rc.Reason, rc.Message = metav1.ConditionFalse, string(mcsv1b1.ServiceExportReasonFailed), sc.Message
	case !sync.published:
		rc.Status, rc.Reason, rc.Message = metav1.ConditionFalse, string(mcsv1b1.ServiceExportReasonPending), sc.Message
	}
	apimeta.SetStatusCondition(&next.Status.Conditions, rc)
	if conditionsEqual(se.Status.Conditions, next.Status.Conditions) {
		return nil
	}
	if s.standby != nil && s.standby(se.Namespace+"/"+se.Name) {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, err := s.mcs.MulticlusterV1beta1().ServiceExports(se.Namespace).UpdateStatus(cctx, next, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// markRemoved sets the Synced condition of every ServiceExport to False,
// reason ClusterRemoved, with msg, and keeps it so for any the worker
// processes later. It returns once every ServiceExport listed says so.
func (s *kubeSource) markRemoved(ctx context.Context, msg string) error {
	s.mu.Lock()
	s.removed = msg
	s.mu.Unlock()
	return wait.Poll(ctx, wait.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}, "ServiceExport conditions", func(ctx context.Context) error {
		list, err := s.mcs.MulticlusterV1beta1().ServiceExports("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		var errs []error
		for i := range list.Items {
			se := &list.Items[i]
			next := se.DeepCopy()
			apimeta.SetStatusCondition(&next.Status.Conditions, metav1.Condition{Type: ConditionSynced, Status: metav1.ConditionFalse,
				Reason: ReasonClusterRemoved, Message: truncateMsg(msg), ObservedGeneration: se.Generation})
			apimeta.SetStatusCondition(&next.Status.Conditions, metav1.Condition{Type: string(mcsv1b1.ServiceExportConditionReady), Status: metav1.ConditionFalse,
				Reason: string(mcsv1b1.ServiceExportReasonFailed), Message: truncateMsg(msg), ObservedGeneration: se.Generation})
			if conditionsEqual(se.Status.Conditions, next.Status.Conditions) {
				continue
			}
			_, err := s.mcs.MulticlusterV1beta1().ServiceExports(se.Namespace).UpdateStatus(ctx, next, metav1.UpdateOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("%s/%s: %w", se.Namespace, se.Name, err))
			}
		}
		return errors.Join(errs...)
	})
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
