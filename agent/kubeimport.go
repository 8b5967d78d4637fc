package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	mcsv1b1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"
	mcsinformers "sigs.k8s.io/mcs-api/pkg/client/informers/externalversions"
	mcslisters "sigs.k8s.io/mcs-api/pkg/client/listers/apis/v1beta1"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// sliceManagedBy is the EndpointSlice managed-by label value.
const sliceManagedBy = "agent.meshfed.io"

// kubeImporter writes imports into the cluster: for each global service
// whose namespace exists, a ServiceImport, a derived Service and an
// EndpointSlice pointing at the local gateway. It only ever touches
// objects labelled as its own. One goroutine reconciles everything from
// the latest view; informer callbacks only signal it.
type kubeImporter struct {
	log        *slog.Logger
	self       string
	gateway    string // Config.GatewayAddress: the fallback
	namespace  string
	gatewaySel labels.Selector
	kube       kubernetes.Interface
	mcs        mcsclient.Interface
	kick       chan struct{}

	egress *egressTable
	inited bool

	// ips are the derived Services' ClusterIPs by import, as of the last
	// reconcile: the imports' ClusterSetIPs, served by the DNS server.
	// onIPs is called when they change (set before Run).
	ipMu  sync.Mutex
	ips   map[federation.ServiceKey][]netip.Addr
	onIPs func()

	// observeOnly, when set and true, makes reconcile read what the
	// leader wrote instead of writing (a standby; leader.go).
	observeOnly func() bool
}

func newKubeImporter(rc *rest.Config, cfg Config, egress *egressTable, log *slog.Logger) (*kubeImporter, error) {
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	mc, err := mcsclient.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("mcs client: %w", err)
	}
	sel, err := labels.Parse(cfg.GatewaySelector)
	if err != nil {
		return nil, fmt.Errorf("gateway_selector: %w", err)
	}
	return &kubeImporter{log: log, self: cfg.Cluster.String(), gateway: cfg.GatewayAddress, namespace: cfg.Namespace, gatewaySel: sel,
		kube: kc, mcs: mc, kick: make(chan struct{}, 1), egress: egress}, nil
}

type importListers struct {
	gateways   corelisters.PodLister // the gateway pods, in the agent's namespace
	namespaces corelisters.NamespaceLister
	imports    mcslisters.ServiceImportLister
	services   corelisters.ServiceLister
	slices     discoverylisters.EndpointSliceLister
}

func (im *kubeImporter) signal(any) {
	select {
	case im.kick <- struct{}{}:
	default:
	}
}

// Run reconciles until ctx is done. Nothing is written or deleted before
// the first view arrives (from the cache or the hub).
func (im *kubeImporter) Run(ctx context.Context, views *mailbox[*view]) error {
	owned := func(o *metav1.ListOptions) { o.LabelSelector = LabelManagedBy + "=" + ManagedByValue }
	kf := informers.NewSharedInformerFactory(im.kube, 0)
	of := informers.NewSharedInformerFactoryWithOptions(im.kube, 0, informers.WithTweakListOptions(owned))
	mf := mcsinformers.NewSharedInformerFactoryWithOptions(im.mcs, 0, mcsinformers.WithTweakListOptions(owned))
	h := handlers(im.signal, im.signal)
	nsInf := kf.Core().V1().Namespaces()
	siInf := mf.Multicluster().V1beta1().ServiceImports()
	svcInf := of.Core().V1().Services()
	esInf := of.Discovery().V1().EndpointSlices()
	for _, inf := range []cache.SharedIndexInformer{nsInf.Informer(), siInf.Informer(), svcInf.Informer(), esInf.Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return err
		}
	}
	gf := informers.NewSharedInformerFactoryWithOptions(im.kube, 0, informers.WithNamespace(im.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = im.gatewaySel.String() }))
	gwInf := gf.Core().V1().Pods()
	if _, err := gwInf.Informer().AddEventHandler(h); err != nil {
		return err
	}
	gf.Start(ctx.Done())
	defer gf.Shutdown()
	l := importListers{gateways: gwInf.Lister(), namespaces: nsInf.Lister(), imports: siInf.Lister(), services: svcInf.Lister(), slices: esInf.Lister()}
	kf.Start(ctx.Done())
	of.Start(ctx.Done())
	mf.Start(ctx.Done())
	defer kf.Shutdown()
	defer of.Shutdown()
	defer mf.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), gwInf.Informer().HasSynced, nsInf.Informer().HasSynced, siInf.Informer().HasSynced, svcInf.Informer().HasSynced, esInf.Informer().HasSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("importer caches did not sync (are the MCS CRDs installed?)")
	}
	im.log.Debug("importer caches synced")
	var cur *view
	var retry <-chan time.Time
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-views.ch:
			if v, ok := views.take(); ok {
				cur = v
			}
		case <-im.kick:
		case <-retry:
			retry = nil
		}
		if cur == nil {
			continue
		}
		start := time.Now()
		err := im.reconcile(ctx, l, cur)
		im.log.Debug("reconciled imports", "revision", cur.revision, "took", time.Since(start), "err", err)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			im.log.Warn("reconciling imports", "err", err, "retry", backoff)
			retry = time.After(backoff)
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
	}
}

func isOwned(m metav1.Object) bool { return m.GetLabels()[LabelManagedBy] == ManagedByValue }

// derivedName is the derived Service's (and its EndpointSlice's) name.
func derivedName(name string) string {
	n := "meshfed-" + name
	if len(n) <= 63 {
		return n
	}
	sum := sha256.Sum256([]byte(name))
	return n[:54] + "-" + hex.EncodeToString(sum[:4])
}

func egressAnnotation(ports map[string]int) string {
	keys := slices.Sorted(maps.Keys(ports))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+strconv.Itoa(ports[k]))
	}
	return strings.Join(parts, ",")
}

func parseEgressAnnotation(s string) map[string]int {
	out := map[string]int{}
	for _, p := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(p, "=")
		if n, err := strconv.Atoi(v); ok && err == nil {
			out[k] = n
		}
	}
	return out
}

// egressSeed reads the egress ports recorded on the importer's own
// ServiceImports (a restart's starting point).
func egressSeed(sis []*mcsv1b1.ServiceImport) map[egressKey]int {
	seed := map[egressKey]int{}
	for _, si := range sis {
		if !isOwned(si) {
			continue
		}
		svc, err := federation.NewServiceKey(si.Namespace, si.Name)
		if err != nil {
			continue
		}
		for port, p := range parseEgressAnnotation(si.Annotations[AnnotationEgressPorts]) {
			seed[egressKey{service: svc, port: port}] = p
		}
	}
	return seed
}

// seedEgress seeds the egress table from the ServiceImports in the API
// server, before the gateways are served: a restarted agent never sends a
// gateway egress_port 0 for an import it had assigned a port to.
func (im *kubeImporter) seedEgress(ctx context.Context) error {
	list, err := im.mcs.MulticlusterV1beta1().ServiceImports("").List(ctx, metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedByValue})
	if err != nil {
		return fmt.Errorf("agent: egress ports from ServiceImports: %w", err)
	}
	sis := make([]*mcsv1b1.ServiceImport, len(list.Items))
	for i := range list.Items {
		sis[i] = &list.Items[i]
	}
	im.egress.seed(egressSeed(sis))
	return nil
}

func (im *kubeImporter) reconcile(ctx context.Context, l importListers, v *view) error {
	if im.observeOnly != nil && im.observeOnly() {
		return im.observe(l, v)
	}
	existing, err := l.imports.List(labelsEverything())
	if err != nil {
		return err
	}
	if !im.inited {
		// Keep the egress ports assigned before a restart.
		im.egress.seed(egressSeed(existing))
		im.inited = true
	}
	plans, _ := planImports(im.self, v)
	want := map[string]bool{}
	wantSvc := map[federation.ServiceKey]bool{}
	var errs []error
	for _, key := range sortedKeys(plans) {
		p := plans[key]
		if _, err := l.namespaces.Get(p.Namespace); err != nil {
			continue
		}
		want[key] = true
		wantSvc[p.service()] = true
		if err := im.ensure(ctx, l, p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
	}
	// Garbage: owned objects of services no longer imported.
	for _, si := range existing {
		if isOwned(si) && !want[si.Namespace+"/"+si.Name] {
			errs = append(errs, im.deleteImport(ctx, si.Namespace, si.Name))
		}
	}
	svcs, err := l.services.List(labelsEverything())
	if err != nil {
		return err
	}
	for _, s := range svcs {
		if isOwned(s) && !want[s.Namespace+"/"+s.Labels[LabelService]] {
			errs = append(errs, ignoreNotFound(im.kube.CoreV1().Services(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{})))
		}
	}
	im.setIPs(derivedClusterIPs(svcs, wantSvc))
	sls, err := l.slices.List(labelsEverything())
	if err != nil {
		return err
	}
	for _, s := range sls {
		if isOwned(s) && !want[s.Namespace+"/"+s.Labels[LabelService]] {
			errs = append(errs, ignoreNotFound(im.kube.DiscoveryV1().EndpointSlices(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{})))
		}
	}
	im.egress.retain(wantSvc)
	return errors.Join(errs...)
}

// derivedClusterIPs are the ClusterIPs of the derived Services of the
// imports in want, by import.
func derivedClusterIPs(svcs []*corev1.Service, want map[federation.ServiceKey]bool) map[federation.ServiceKey][]netip.Addr {
	out := map[federation.ServiceKey][]netip.Addr{}
	for _, s := range svcs {
		if !isOwned(s) || s.Name != derivedName(s.Labels[LabelService]) {
			continue
		}
		key, err := federation.NewServiceKey(s.Namespace, s.Labels[LabelService])
		if err != nil || !want[key] {
			continue
		}
		ips := s.Spec.ClusterIPs
		if len(ips) == 0 && s.Spec.ClusterIP != "" {
			ips = []string{s.Spec.ClusterIP}
		}
		for _, ip := range ips {
			if a, err := netip.ParseAddr(ip); err == nil {
				out[key] = append(out[key], a)
			}
		}
	}
	return out
}

func (im *kubeImporter) setIPs(ips map[federation.ServiceKey][]netip.Addr) {
	im.ipMu.Lock()
	changed := !maps.EqualFunc(im.ips, ips, slices.Equal)
	im.ips = ips
	on := im.onIPs
	im.ipMu.Unlock()
	if changed && on != nil {
		on()
	}
}

// clusterSetIPs returns the imports' ClusterSetIPs as of the last
// reconcile.
func (im *kubeImporter) clusterSetIPs() map[federation.ServiceKey][]netip.Addr {
	im.ipMu.Lock()
	defer im.ipMu.Unlock()
	out := make(map[federation.ServiceKey][]netip.Addr, len(im.ips))
	for k, v := range im.ips {
		out[k] = slices.Clone(v)
	}
	return out
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func (im *kubeImporter) deleteImport(ctx context.Context, ns, name string) error {
	im.log.Info("removing import", "service", ns+"/"+name)
	return ignoreNotFound(im.mcs.MulticlusterV1beta1().ServiceImports(ns).Delete(ctx, name, metav1.DeleteOptions{}))
}

func ownedMeta(ns, name, service string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{LabelManagedBy: ManagedByValue, LabelService: service}}
}

// k8sProtocol is the Kubernetes protocol of a federation protocol: its
// transport.
func k8sProtocol(p string) corev1.Protocol {
	return corev1.Protocol(fedv1.Transport(p))
}

func appProtocol(p *fedv1.ServicePort) *string {
	if p.GetAppProtocol() == "" {
		return nil
	}
	s := p.GetAppProtocol()
	return &s
}

// desiredService is the derived Service of an import: headless
// (clusterIP None, its EndpointSlices list the exporting clusters' pods)
// for a Headless import, else a ClusterIP Service whose ports target the
// egress ports of the gateways. The ClusterIP Service is PreferDualStack
// when the oldest export is dual-stack, so that the import gets a
// ClusterSetIP of each family this cluster has; else the cluster's
// default (SingleStack). A headless one has no cluster IP and keeps the
// API server's default policy: its slices are written here.
func desiredService(p *importPlan, dn string, egress map[string]int) *corev1.Service {
	s := &corev1.Service{ObjectMeta: ownedMeta(p.Namespace, dn, p.Name), Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP}}
	if p.Headless {
		s.Spec.ClusterIP = corev1.ClusterIPNone
	} else if len(p.IPFamilies) > 1 {
		s.Spec.IPFamilyPolicy = ptrTo(corev1.IPFamilyPolicyPreferDualStack)
	}
	for _, port := range p.Ports {
		target := intstr.FromInt32(int32(egress[port.GetName()]))
		if p.Headless {
			target = intstr.FromInt32(int32(port.GetPort()))
		}
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: port.GetName(), Protocol: k8sProtocol(port.GetProtocol()), AppProtocol: appProtocol(port),
			Port: int32(port.GetPort()), TargetPort: target})
	}
	return s
}

// sliceName is the name of one of an import's EndpointSlices: the derived
// Service's name, or it with a suffix, shortened with a hash past 63
// characters.
func sliceName(dn string, suffix ...string) string {
	if len(suffix) == 0 {
		return dn
	}
	n := dn + "-" + strings.Join(suffix, "-")
	if len(n) <= 63 {
		return n
	}
	sum := sha256.Sum256([]byte(n))
	return n[:54] + "-" + hex.EncodeToString(sum[:4])
}

// sliceLabels are the labels of an import's EndpointSlices (KEP-1645):
// the MCS service name and source cluster, the managed-by of the
// EndpointSlice API (not the Kubernetes controller's), the derived
// Service's name (so cluster DNS and kube-proxy use them), and the
// agent's ownership labels.
func sliceLabels(p *importPlan, dn, source string) map[string]string {
	return map[string]string{
		LabelManagedBy: ManagedByValue, LabelService: p.Name,
		discoveryv1.LabelServiceName: dn, discoveryv1.LabelManagedBy: sliceManagedBy,
		mcsv1b1.LabelServiceName: p.Name, mcsv1b1.LabelSourceCluster: source,
	}
}

// desiredSlices are an import's EndpointSlices, sorted by name. A
// ClusterSetIP import has one, named like the derived Service, with an
// endpoint per gateway address (of the first address's family), ready
// when some exporting cluster without a port conflict has a ready
// endpoint; its source cluster is self, where the gateways are. A Headless
// import has one per exporting cluster (without a port conflict), IP
// family and set of target ports, listing that cluster's pods with their
// hostnames; a dual-stack pod is in the IPv4 and the IPv6 slice, as
// Kubernetes lists it.
func desiredSlices(self string, p *importPlan, dn string, gws []string, egress map[string]int) []*discoveryv1.EndpointSlice {
	if !p.Headless {
		addrType := discoveryv1.AddressTypeIPv4
		if len(gws) > 0 {
			if ip := net.ParseIP(gws[0]); ip != nil && ip.To4() == nil {
				addrType = discoveryv1.AddressTypeIPv6
			}
		}
		var ports []discoveryv1.EndpointPort
		for _, port := range p.Ports {
			name, proto, num := port.GetName(), k8sProtocol(port.GetProtocol()), int32(egress[port.GetName()])
			ports = append(ports, discoveryv1.EndpointPort{Name: &name, Protocol: &proto, Port: &num, AppProtocol: appProtocol(port)})
		}
		ready := false
		for _, c := range p.Clusters {
			if c.Ready > 0 && !c.portConflict() {
				ready = true
			}
		}
		// One endpoint per gateway replica of the slice's address family.
		eps := []discoveryv1.Endpoint{}
		for _, a := range gws {
			if ip := net.ParseIP(a); ip == nil || (ip.To4() == nil) != (addrType == discoveryv1.AddressTypeIPv6) {
				continue
			}
			eps = append(eps, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
		}
		return []*discoveryv1.EndpointSlice{{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: dn, Labels: sliceLabels(p, dn, self)},
			AddressType: addrType, Endpoints: eps, Ports: ports}}
	}
	var out []*discoveryv1.EndpointSlice
	for _, c := range p.Clusters {
		if c.portConflict() {
			continue
		}
		type group struct {
			sig   string
			ports map[string]uint32
			eps   map[discoveryv1.AddressType][]discoveryv1.Endpoint
		}
		var groups []*group
		for _, e := range c.Endpoints {
			sig := egressAnnotation(targetPortsInt(e.GetTargetPorts()))
			i := slices.IndexFunc(groups, func(g *group) bool { return g.sig == sig })
			if i < 0 {
				groups = append(groups, &group{sig: sig, ports: e.GetTargetPorts(), eps: map[discoveryv1.AddressType][]discoveryv1.Endpoint{}})
				i = len(groups) - 1
			}
			g := groups[i]
			for _, a := range e.GetAddresses() {
				fam := discoveryv1.AddressTypeIPv4
				if ip := net.ParseIP(a); ip != nil && ip.To4() == nil {
					fam = discoveryv1.AddressTypeIPv6
				}
				ep := discoveryv1.Endpoint{Addresses: []string{a},
					Conditions: discoveryv1.EndpointConditions{Ready: ptrTo(e.GetReady()), Serving: ptrTo(e.GetServing()), Terminating: ptrTo(e.GetTerminating())}}
				if e.GetHostname() != "" {
					ep.Hostname = ptrTo(e.GetHostname())
				}
				if e.GetZone() != "" {
					ep.Zone = ptrTo(e.GetZone())
				}
				g.eps[fam] = append(g.eps[fam], ep)
			}
		}
		for i, g := range groups {
			var ports []discoveryv1.EndpointPort
			for _, port := range p.Ports {
				if tp, ok := g.ports[port.GetName()]; ok {
					ports = append(ports, discoveryv1.EndpointPort{Name: ptrTo(port.GetName()), Protocol: ptrTo(k8sProtocol(port.GetProtocol())),
						Port: ptrTo(int32(tp)), AppProtocol: appProtocol(port)})
				}
			}
			for _, fam := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
				eps := g.eps[fam]
				if len(eps) == 0 {
					continue
				}
				suffix := []string{c.Cluster, map[discoveryv1.AddressType]string{discoveryv1.AddressTypeIPv4: "v4", discoveryv1.AddressTypeIPv6: "v6"}[fam]}
				if i > 0 {
					suffix = append(suffix, strconv.Itoa(i))
				}
				out = append(out, &discoveryv1.EndpointSlice{
					ObjectMeta:  metav1.ObjectMeta{Namespace: p.Namespace, Name: sliceName(dn, suffix...), Labels: sliceLabels(p, dn, c.Cluster)},
					AddressType: fam, Endpoints: eps, Ports: ports})
			}
		}
	}
	slices.SortFunc(out, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func targetPortsInt(m map[string]uint32) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = int(v)
	}
	return out
}

func ptrTo[T any](v T) *T { return &v }

// ipFamilyPolicy is a Service's IP family policy, unset read as the
// API server's default, SingleStack.
func ipFamilyPolicy(s *corev1.Service) corev1.IPFamilyPolicy {
	if s.Spec.IPFamilyPolicy == nil {
		return corev1.IPFamilyPolicySingleStack
	}
	return *s.Spec.IPFamilyPolicy
}

// desiredImportSpec is the ServiceImport's spec: the oldest export's type,
// ports (with the younger exports' that do not conflict), session
// affinity, internal traffic policy and traffic distribution. A
// ClusterSetIP import's ips are the derived Service's cluster IPs, one per
// family, and its ipFamilies theirs, in the same order; a Headless import
// has no ips, and the oldest export's families (its endpoints').
func desiredImportSpec(p *importPlan, svc *corev1.Service) mcsv1b1.ServiceImportSpec {
	spec := mcsv1b1.ServiceImportSpec{Type: mcsv1b1.ClusterSetIP}
	if p.Headless {
		spec.Type = mcsv1b1.Headless
	}
	for _, port := range p.Ports {
		spec.Ports = append(spec.Ports, mcsv1b1.ServicePort{Name: port.GetName(), Protocol: k8sProtocol(port.GetProtocol()), AppProtocol: appProtocol(port), Port: int32(port.GetPort())})
	}
	switch {
	case p.Headless:
		for _, f := range p.IPFamilies {
			spec.IPFamilies = append(spec.IPFamilies, corev1.IPFamily(f))
		}
	case svc != nil && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone:
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, ip := range ips {
			a, err := netip.ParseAddr(ip)
			if err != nil {
				continue
			}
			spec.IPs = append(spec.IPs, ip)
			if a.Is4() {
				spec.IPFamilies = append(spec.IPFamilies, corev1.IPv4Protocol)
			} else {
				spec.IPFamilies = append(spec.IPFamilies, corev1.IPv6Protocol)
			}
		}
	}
	if p.InternalTrafficPolicy != "" {
		spec.InternalTrafficPolicy = ptrTo(corev1.ServiceInternalTrafficPolicy(p.InternalTrafficPolicy))
	}
	if p.TrafficDistribution != "" {
		spec.TrafficDistribution = ptrTo(p.TrafficDistribution)
	}
	spec.SessionAffinity = corev1.ServiceAffinityNone
	if p.SessionAffinity == string(corev1.ServiceAffinityClientIP) {
		spec.SessionAffinity = corev1.ServiceAffinityClientIP
		if p.SessionAffinityTimeoutSeconds != 0 {
			spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptrTo(p.SessionAffinityTimeoutSeconds)}}
		}
	}
	return spec
}

func (im *kubeImporter) ensure(ctx context.Context, l importListers, p *importPlan) error {
	dn := derivedName(p.Name)
	egress := map[string]int{}
	for _, port := range p.Ports {
		e, err := im.egress.allocate(p.service(), port.GetName())
		if err != nil {
			return err
		}
		egress[port.GetName()] = e
	}
	// 1. The derived Service.
	want := desiredService(p, dn, egress)
	svc, err := l.services.Services(p.Namespace).Get(dn)
	switch {
	case apierrors.IsNotFound(err):
		if cur, gerr := im.kube.CoreV1().Services(p.Namespace).Get(ctx, dn, metav1.GetOptions{}); gerr == nil && !isOwned(cur) {
			return fmt.Errorf("service %s/%s exists and is not meshfed's; not touching it", p.Namespace, dn)
		}
		svc, err = im.kube.CoreV1().Services(p.Namespace).Create(ctx, want, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	case err != nil:
		return err
	case (svc.Spec.ClusterIP == corev1.ClusterIPNone) != p.Headless:
		// The cluster IP is immutable: a type change replaces the
		// Service; the informer's delete brings the next pass.
		im.log.Info("replacing the derived service: import type changed", "service", p.Key, "headless", p.Headless)
		return ignoreNotFound(im.kube.CoreV1().Services(p.Namespace).Delete(ctx, dn, metav1.DeleteOptions{}))
	case !servicePortsEqual(svc.Spec.Ports, want.Spec.Ports) || !p.Headless && ipFamilyPolicy(svc) != ipFamilyPolicy(want):
		// A policy change adds the second family's cluster IP, or
		// drops it (the API server trims it on the way to SingleStack).
		n := svc.DeepCopy()
		n.Spec.Ports = want.Spec.Ports
		if !p.Headless {
			n.Spec.IPFamilyPolicy = ptrTo(ipFamilyPolicy(want))
		}
		if svc, err = im.kube.CoreV1().Services(p.Namespace).Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			return cacheBehind(err)
		}
	}
	// 2. The EndpointSlices.
	if err := im.ensureSlices(ctx, l, p, desiredSlices(im.self, p, dn, im.gatewayAddresses(l), egress)); err != nil {
		return err
	}
	// 3. The ServiceImport.
	spec := desiredImportSpec(p, svc)
	var clusters []mcsv1b1.ClusterStatus
	for _, c := range p.Clusters {
		clusters = append(clusters, mcsv1b1.ClusterStatus{Cluster: c.Cluster})
	}
	lbls, anns := importMeta(p, egressAnnotation(egress))
	sis := im.mcs.MulticlusterV1beta1().ServiceImports(p.Namespace)
	si, err := l.imports.ServiceImports(p.Namespace).Get(p.Name)
	switch {
	case apierrors.IsNotFound(err):
		n := &mcsv1b1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: lbls, Annotations: anns}, Spec: spec}
		si, err = sis.Create(ctx, n, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil // the cache is behind; the next pass compares
		}
		if err != nil {
			return err
		}
		im.log.Info("created import", "service", p.Key)
	case err != nil:
		return err
	case !isOwned(si):
		return fmt.Errorf("ServiceImport %s exists and is not meshfed's; not touching it", p.Key)
	case !serviceImportSpecEqual(si.Spec, spec) || !maps.Equal(si.Labels, lbls) || !maps.Equal(si.Annotations, anns):
		n := si.DeepCopy()
		n.Spec, n.Labels, n.Annotations = spec, lbls, anns
		if si, err = sis.Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			return cacheBehind(err)
		}
	}
	if !slices.Equal(si.Status.Clusters, clusters) {
		n := si.DeepCopy()
		n.Status.Clusters = clusters
		if _, err := sis.UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			return cacheBehind(err)
		}
	}
	return nil
}

// importMeta is a ServiceImport's labels and annotations: the oldest
// export's exportedLabels and exportedAnnotations, then the agent's own
// (ownership labels, the egress ports annotation), which win a clash. The
// agent owns the object, so these are all it has: a label or annotation
// no longer exported is removed.
func importMeta(p *importPlan, egress string) (map[string]string, map[string]string) {
	lbls := maps.Clone(p.Labels)
	if lbls == nil {
		lbls = map[string]string{}
	}
	maps.Copy(lbls, ownedMeta(p.Namespace, p.Name, p.Name).Labels)
	anns := maps.Clone(p.Annotations)
	if anns == nil {
		anns = map[string]string{}
	}
	anns[AnnotationEgressPorts] = egress
	return lbls, anns
}

// gatewayAddresses are the addresses imports point at: every ready
// gateway pod (Config.GatewaySelector in the agent's namespace), sorted;
// without any, Config.GatewayAddress when set.
func (im *kubeImporter) gatewayAddresses(l importListers) []string {
	var out []string
	if pods, err := l.gateways.List(im.gatewaySel); err == nil {
		for _, p := range pods {
			if p.DeletionTimestamp == nil && p.Status.PodIP != "" && podReady(p) {
				out = append(out, p.Status.PodIP)
			}
		}
	}
	sort.Strings(out)
	if len(out) == 0 && im.gateway != "" {
		out = []string{im.gateway}
	}
	return out
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ensureSlices makes an import's owned EndpointSlices the wanted ones:
// created, updated in place when they differ, replaced when the address
// type changed (it is immutable), and deleted when no longer wanted.
func (im *kubeImporter) ensureSlices(ctx context.Context, l importListers, p *importPlan, want []*discoveryv1.EndpointSlice) error {
	api := im.kube.DiscoveryV1().EndpointSlices(p.Namespace)
	names := map[string]bool{}
	var errs []error
	for _, es := range want {
		names[es.Name] = true
		cur, err := l.slices.EndpointSlices(p.Namespace).Get(es.Name)
		switch {
		case apierrors.IsNotFound(err):
			if _, err := api.Create(ctx, es, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				errs = append(errs, err)
			}
			continue
		case err != nil:
			errs = append(errs, err)
			continue
		}
		if maps.Equal(cur.Labels, es.Labels) && cur.AddressType == es.AddressType && slicePortsEqual(cur.Ports, es.Ports) && sliceEndpointsEqual(cur.Endpoints, es.Endpoints) {
			continue
		}
		if cur.AddressType != es.AddressType {
			// AddressType is immutable: replace the slice.
			errs = append(errs, ignoreNotFound(api.Delete(ctx, es.Name, metav1.DeleteOptions{})))
			continue
		}
		n := cur.DeepCopy()
		n.Labels, n.Endpoints, n.Ports = es.Labels, es.Endpoints, es.Ports
		_, err = api.Update(ctx, n, metav1.UpdateOptions{})
		errs = append(errs, cacheBehind(err))
	}
	owned, err := l.slices.EndpointSlices(p.Namespace).List(labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue, LabelService: p.Name}))
	if err != nil {
		return err
	}
	for _, es := range owned {
		if !names[es.Name] {
			errs = append(errs, ignoreNotFound(api.Delete(ctx, es.Name, metav1.DeleteOptions{})))
		}
	}
	return errors.Join(errs...)
}

// cacheBehind turns a write conflict into success: the lister was behind
// (typically our own previous write), the informer will deliver the newer
// object and kick another pass, which compares again. Retrying with backoff
// instead would only add delay.
func cacheBehind(err error) error {
	if apierrors.IsConflict(err) {
		return nil
	}
	return err
}

func ptrEq[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func servicePortsEqual(a, b []corev1.ServicePort) bool {
	return slices.EqualFunc(a, b, func(x, y corev1.ServicePort) bool {
		return x.Name == y.Name && x.Protocol == y.Protocol && ptrEq(x.AppProtocol, y.AppProtocol) && x.Port == y.Port && x.TargetPort == y.TargetPort
	})
}

func slicePortsEqual(a, b []discoveryv1.EndpointPort) bool {
	return slices.EqualFunc(a, b, func(x, y discoveryv1.EndpointPort) bool {
		return ptrEq(x.Name, y.Name) && ptrEq(x.Protocol, y.Protocol) && ptrEq(x.Port, y.Port) && ptrEq(x.AppProtocol, y.AppProtocol)
	})
}

func sliceEndpointsEqual(a, b []discoveryv1.Endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y discoveryv1.Endpoint) bool {
		return slices.Equal(x.Addresses, y.Addresses) && ptrEq(x.Conditions.Ready, y.Conditions.Ready) &&
			ptrEq(x.Conditions.Serving, y.Conditions.Serving) && ptrEq(x.Conditions.Terminating, y.Conditions.Terminating) &&
			ptrEq(x.Hostname, y.Hostname) && ptrEq(x.Zone, y.Zone)
	})
}

func serviceImportSpecEqual(a, b mcsv1b1.ServiceImportSpec) bool {
	return a.Type == b.Type && slices.Equal(a.IPs, b.IPs) && slices.Equal(a.IPFamilies, b.IPFamilies) && a.SessionAffinity == b.SessionAffinity &&
		ptrEq(a.InternalTrafficPolicy, b.InternalTrafficPolicy) && ptrEq(a.TrafficDistribution, b.TrafficDistribution) &&
		equality.Semantic.DeepEqual(a.SessionAffinityConfig, b.SessionAffinityConfig) &&
		slices.EqualFunc(a.Ports, b.Ports, func(x, y mcsv1b1.ServicePort) bool {
			return x.Name == y.Name && x.Protocol == y.Protocol && ptrEq(x.AppProtocol, y.AppProtocol) && x.Port == y.Port
		})
}

// removeAll deletes every ServiceImport, Service and EndpointSlice the
// importer created (labelled as its own), in every namespace. It returns
// nil only when a listing found none left, so that polling it outlasts a
// reconcile that was writing when it started.
func (im *kubeImporter) removeAll(ctx context.Context) error {
	owned := metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedByValue}
	left := 0
	var errs []error
	sis, err := im.mcs.MulticlusterV1beta1().ServiceImports("").List(ctx, owned)
	if err != nil {
		return err
	}
	for _, si := range sis.Items {
		left++
		errs = append(errs, im.deleteImport(ctx, si.Namespace, si.Name))
	}
	svcs, err := im.kube.CoreV1().Services("").List(ctx, owned)
	if err != nil {
		return err
	}
	for _, s := range svcs.Items {
		left++
		errs = append(errs, ignoreNotFound(im.kube.CoreV1().Services(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{})))
	}
	sls, err := im.kube.DiscoveryV1().EndpointSlices("").List(ctx, owned)
	if err != nil {
		return err
	}
	for _, s := range sls.Items {
		left++
		errs = append(errs, ignoreNotFound(im.kube.DiscoveryV1().EndpointSlices(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{})))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if left > 0 {
		return fmt.Errorf("removed %d imported objects; checking that none is left", left)
	}
	return nil
}
