package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	mcsv1b1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsfake "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned/fake"
	mcslisters "sigs.k8s.io/mcs-api/pkg/client/listers/apis/v1beta1"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// fakeListers builds the kubernetes source's listers over in-memory
// indexers holding objs (ServiceExports, Services, EndpointSlices, Nodes,
// and Pods as metadata).
func fakeListers(t testing.TB, objs ...runtime.Object) kubeListers {
	t.Helper()
	idx := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	se, svc, es, nodes, pods := idx(), idx(), idx(), idx(), idx()
	for _, o := range objs {
		var err error
		switch x := o.(type) {
		case *mcsv1b1.ServiceExport:
			err = se.Add(x)
		case *corev1.Service:
			err = svc.Add(x)
		case *discoveryv1.EndpointSlice:
			err = es.Add(x)
		case *corev1.Node:
			err = nodes.Add(x)
		case *corev1.Pod:
			err = pods.Add(&metav1.PartialObjectMetadata{ObjectMeta: x.ObjectMeta})
		default:
			t.Fatalf("fakeListers: %T", o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return kubeListers{
		exports:  mcslisters.NewServiceExportLister(se),
		services: corelisters.NewServiceLister(svc),
		slices:   discoverylisters.NewEndpointSliceLister(es),
		nodes:    corelisters.NewNodeLister(nodes),
		pods:     cache.NewGenericLister(pods, corev1.SchemeGroupVersion.WithResource("pods").GroupResource()),
	}
}

func ptr[T any](v T) *T { return &v }

type endpointSpec struct {
	addr, pod, hostname string
	ready               bool
}

func slice(name, svc string, family discoveryv1.AddressType, ports map[string]int32, eps ...endpointSpec) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: family}
	for n, p := range ports {
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr(n), Port: ptr(p)})
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{Addresses: []string{e.addr}, Zone: ptr("z1"), Conditions: discoveryv1.EndpointConditions{Ready: ptr(e.ready)}}
		if e.pod != "" {
			ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: e.pod}
		}
		if e.hostname != "" {
			ep.Hostname = ptr(e.hostname)
		}
		es.Endpoints = append(es.Endpoints, ep)
	}
	return es
}

func export(name string) *mcsv1b1.ServiceExport {
	return &mcsv1b1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}
}

func service(name string, mutate func(*corev1.ServiceSpec), ports ...corev1.ServicePort) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10", Ports: ports, SessionAffinity: corev1.ServiceAffinityNone}}
	if mutate != nil {
		mutate(&s.Spec)
	}
	return s
}

func TestBuildExportFromKubernetesObjects(t *testing.T) {
	dns := []corev1.ServicePort{{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}
	web := []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}
	dnsPorts := []*fedv1.ServicePort{{Name: "dns-tcp", Port: 53, Protocol: "TCP"}, {Name: "dns", Port: 53, Protocol: "UDP"}}
	webPorts := []*fedv1.ServicePort{{Name: "http", Port: 80, Protocol: "TCP"}}
	dualStack := func(s *corev1.ServiceSpec) {
		s.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	}
	for _, tc := range []struct {
		name       string
		objs       []runtime.Object
		want       *fedv1.ExportedService
		wantLocal  []string // local endpoint addresses, sorted
		wantReason string
		export     func(*mcsv1b1.ServiceExport)
	}{
		{
			name: "53/TCP and 53/UDP is valid",
			objs: []runtime.Object{service("dns", nil, dns...),
				slice("dns-1", "dns", discoveryv1.AddressTypeIPv4, map[string]int32{"dns": 53, "dns-tcp": 53}, endpointSpec{addr: "10.1.0.1", pod: "p1", ready: true})},
			want: &fedv1.ExportedService{Namespace: "default", Name: "dns", Ports: dnsPorts,
				Endpoints: []*fedv1.EndpointGroup{{Zone: "z1", Ready: 1, Serving: 1}}},
			wantLocal: []string{"10.1.0.1"},
		},
		{
			name: "53/TCP, 53/UDP and 53/SCTP is valid: SCTP is carried",
			objs: []runtime.Object{service("dns", nil, append(slices.Clone(dns), corev1.ServicePort{Name: "dns-sctp", Port: 53, Protocol: corev1.ProtocolSCTP})...)},
			want: &fedv1.ExportedService{Namespace: "default", Name: "dns", Ports: append(slices.Clone(dnsPorts), &fedv1.ServicePort{Name: "dns-sctp", Port: 53, Protocol: "SCTP"}),
				Endpoints: []*fedv1.EndpointGroup{}},
		},
		{
			name: "dual-stack pods count once and keep both families",
			objs: []runtime.Object{service("web", dualStack, web...),
				slice("web-v4", "web", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080},
					endpointSpec{addr: "10.1.0.1", pod: "p1", ready: true}, endpointSpec{addr: "10.1.0.2", pod: "p2", ready: true}),
				slice("web-v6", "web", discoveryv1.AddressTypeIPv6, map[string]int32{"http": 8080},
					endpointSpec{addr: "fd00::1", pod: "p1", ready: true}, endpointSpec{addr: "fd00::2", pod: "p2", ready: false})},
			want: &fedv1.ExportedService{Namespace: "default", Name: "web", Ports: webPorts, IpFamilies: []string{"IPv4", "IPv6"},
				// p2 is not ready in its IPv6 slice: not ready.
				Endpoints: []*fedv1.EndpointGroup{{Zone: "z1", Ready: 1, Serving: 1}}},
			wantLocal: []string{"10.1.0.1", "10.1.0.2"},
		},
		{
			name: "headless keeps hostnames, both families and target ports",
			objs: []runtime.Object{service("db", func(s *corev1.ServiceSpec) { s.ClusterIP = corev1.ClusterIPNone; dualStack(s) }, web...),
				slice("db-v6", "db", discoveryv1.AddressTypeIPv6, map[string]int32{"http": 5432},
					endpointSpec{addr: "fd00::1", pod: "db-0", hostname: "db-0", ready: true}),
				slice("db-v4", "db", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 5432},
					endpointSpec{addr: "10.1.0.9", pod: "db-1", hostname: "db-1", ready: true},
					endpointSpec{addr: "10.1.0.1", pod: "db-0", hostname: "db-0", ready: true})},
			want: &fedv1.ExportedService{Namespace: "default", Name: "db", Ports: webPorts, Headless: true, IpFamilies: []string{"IPv4", "IPv6"},
				Endpoints: []*fedv1.EndpointGroup{{Zone: "z1", Ready: 2, Serving: 2}},
				HeadlessEndpoints: []*fedv1.HeadlessEndpoint{
					{Hostname: "db-0", Addresses: []string{"10.1.0.1", "fd00::1"}, Ready: true, Serving: true, Zone: "z1", TargetPorts: map[string]uint32{"http": 5432}},
					{Hostname: "db-1", Addresses: []string{"10.1.0.9"}, Ready: true, Serving: true, Zone: "z1", TargetPorts: map[string]uint32{"http": 5432}},
				}},
			wantLocal: []string{"10.1.0.1", "10.1.0.9"},
		},
		{
			name: "ClientIP session affinity",
			objs: []runtime.Object{service("web", func(s *corev1.ServiceSpec) {
				s.SessionAffinity = corev1.ServiceAffinityClientIP
				s.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(600))}}
			}, web...)},
			want: &fedv1.ExportedService{Namespace: "default", Name: "web", Ports: webPorts, SessionAffinity: "ClientIP", SessionAffinityTimeoutSeconds: 600,
				Endpoints: []*fedv1.EndpointGroup{}},
		},
		{
			name: "IP families, traffic policies and the exported labels and annotations are carried",
			objs: []runtime.Object{service("web", func(s *corev1.ServiceSpec) {
				s.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
				s.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
				s.TrafficDistribution = ptr(corev1.ServiceTrafficDistributionPreferClose)
			}, web...)},
			export: func(se *mcsv1b1.ServiceExport) {
				se.Labels, se.Annotations = map[string]string{"own": "x"}, map[string]string{"own": "x"}
				se.Spec.ExportedLabels = map[string]string{"tier": "front"}
				se.Spec.ExportedAnnotations = map[string]string{"example.com/owner": "team a"}
			},
			want: &fedv1.ExportedService{Namespace: "default", Name: "web", Ports: webPorts, Endpoints: []*fedv1.EndpointGroup{},
				IpFamilies: []string{"IPv6", "IPv4"}, InternalTrafficPolicy: "Local", TrafficDistribution: "PreferClose",
				ExportedLabels: map[string]string{"tier": "front"}, ExportedAnnotations: map[string]string{"example.com/owner": "team a"}},
		},
		{
			name:       "an exported label Kubernetes would refuse makes the export invalid",
			objs:       []runtime.Object{service("web", nil, web...)},
			export:     func(se *mcsv1b1.ServiceExport) { se.Spec.ExportedLabels = map[string]string{"tier": "front end"} },
			wantReason: ReasonInvalidExport,
		},
		{
			name:       "ExternalName is refused",
			objs:       []runtime.Object{service("web", func(s *corev1.ServiceSpec) { s.Type = corev1.ServiceTypeExternalName }, web...)},
			wantReason: string(mcsv1b1.ServiceExportReasonInvalidServiceType),
		},
		{
			name:       "no Service",
			wantReason: string(mcsv1b1.ServiceExportReasonNoService),
		},
		{
			name: "the same port twice over TCP is refused",
			objs: []runtime.Object{service("web", nil, corev1.ServicePort{Name: "a", Port: 80, Protocol: corev1.ProtocolTCP},
				corev1.ServicePort{Name: "b", Port: 80, Protocol: corev1.ProtocolTCP, AppProtocol: ptr("http")})},
			wantReason: ReasonInvalidExport,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "web"
			if tc.want != nil {
				name = tc.want.GetName()
			}
			for _, o := range tc.objs {
				if s, ok := o.(*corev1.Service); ok {
					name = s.Name
				}
			}
			se := export(name)
			if tc.export != nil {
				tc.export(se)
			}
			got, local, reason, msg := buildExport(fakeListers(t, append(tc.objs, se)...), se)
			if reason != tc.wantReason {
				t.Fatalf("reason %q (%s), want %q", reason, msg, tc.wantReason)
			}
			if tc.want == nil {
				return
			}
			if !proto.Equal(tc.want, got) {
				t.Errorf("export\n%s\nwant\n%s", prototext.Format(got), prototext.Format(tc.want))
			}
			var addrs []string
			for _, e := range local.GetEndpoints() {
				addrs = append(addrs, e.GetAddress())
			}
			if !slices.Equal(addrs, tc.wantLocal) {
				t.Errorf("local endpoints %v, want %v (one per pod)", addrs, tc.wantLocal)
			}
		})
	}
}

// fakeImporter is a kubeImporter over client-go's fake clientsets. Each
// pass reads listers built from what the fakes hold at its start, as the
// informers would once caught up.
type fakeImporter struct {
	im *kubeImporter
	kc *kubefake.Clientset
	mc *mcsfake.Clientset
}

func newFakeImporter(t testing.TB, self string, objs ...runtime.Object) *fakeImporter {
	t.Helper()
	kc := kubefake.NewClientset(objs...)
	mc := mcsfake.NewSimpleClientset()
	return &fakeImporter{kc: kc, mc: mc, im: &kubeImporter{log: testLogger(t, self), self: self, gateway: "10.99.0.1", namespace: DefaultNamespace,
		gatewaySel: labels.Everything(), kube: kc, mcs: mc, kick: make(chan struct{}, 1), egress: newEgressTable(15000, 15100, nil)}}
}

func (f *fakeImporter) listers(t testing.TB) importListers {
	t.Helper()
	ctx := context.Background()
	idx := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	ns, si, svc, es, pods := idx(), idx(), idx(), idx(), idx()
	add := func(i cache.Indexer, o any) {
		if err := i.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	nsl, err := f.kc.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range nsl.Items {
		add(ns, &nsl.Items[i])
	}
	sil, err := f.mc.MulticlusterV1beta1().ServiceImports("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range sil.Items {
		add(si, &sil.Items[i])
	}
	owned := metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedByValue}
	svcl, err := f.kc.CoreV1().Services("").List(ctx, owned)
	if err != nil {
		t.Fatal(err)
	}
	for i := range svcl.Items {
		add(svc, &svcl.Items[i])
	}
	esl, err := f.kc.DiscoveryV1().EndpointSlices("").List(ctx, owned)
	if err != nil {
		t.Fatal(err)
	}
	for i := range esl.Items {
		add(es, &esl.Items[i])
	}
	return importListers{gateways: corelisters.NewPodLister(pods), namespaces: corelisters.NewNamespaceLister(ns),
		imports: mcslisters.NewServiceImportLister(si), services: corelisters.NewServiceLister(svc), slices: discoverylisters.NewEndpointSliceLister(es)}
}

func writes(actions []k8stesting.Action) int {
	n := 0
	for _, a := range actions {
		switch a.GetVerb() {
		case "create", "update", "delete", "patch":
			n++
		}
	}
	return n
}

// reconcile runs passes until one writes nothing (at most 5), and returns
// the writes of the last pass: 0 once converged.
func (f *fakeImporter) reconcile(t testing.TB, v *view) {
	t.Helper()
	for range 5 {
		f.kc.ClearActions()
		f.mc.ClearActions()
		if err := f.im.reconcile(context.Background(), f.listers(t), v); err != nil {
			t.Fatal(err)
		}
		if writes(f.kc.Actions())+writes(f.mc.Actions()) == 0 {
			return
		}
	}
	t.Fatalf("no fixed point after 5 passes; last writes: %v %v", f.kc.Actions(), f.mc.Actions())
}

func viewOf(recs ...*fedv1.ExportRecord) *view {
	v := newView()
	v.apply(&fedv1.SyncDelta{Revision: 9, Reset_: true, Exports: recs})
	return v
}

func TestImporterWritesMCSObjectsFromTheView(t *testing.T) {
	web := []*fedv1.ServicePort{{Name: "http", Port: 80, Protocol: "HTTP"}}
	headless := func(eps ...*fedv1.HeadlessEndpoint) *fedv1.ExportedService {
		return &fedv1.ExportedService{Namespace: "default", Name: "db", Ports: web, Headless: true, HeadlessEndpoints: eps,
			Endpoints: []*fedv1.EndpointGroup{{Ready: uint32(len(eps))}}}
	}
	ep := func(host string, addrs ...string) *fedv1.HeadlessEndpoint {
		return &fedv1.HeadlessEndpoint{Hostname: host, Addresses: addrs, Ready: true, Serving: true, TargetPorts: map[string]uint32{"http": 5432}}
	}
	type sliceWant struct {
		source    string
		family    discoveryv1.AddressType
		addrs     []string
		hostnames []string
	}
	for _, tc := range []struct {
		name       string
		recs       []*fedv1.ExportRecord
		svc        string
		wantType   mcsv1b1.ServiceImportType
		wantAff    corev1.ServiceAffinity
		wantIP     bool // the derived Service has a cluster IP
		wantSlices []sliceWant
		clusters   []string
	}{
		{
			name: "ClusterSetIP: one slice at the gateway, source cluster self",
			recs: []*fedv1.ExportRecord{{Cluster: "east", CreateRevision: 1, Service: &fedv1.ExportedService{Namespace: "default", Name: "web", Ports: web,
				SessionAffinity: "ClientIP", SessionAffinityTimeoutSeconds: 60, Endpoints: []*fedv1.EndpointGroup{{Ready: 2}}}}},
			svc: "web", wantType: mcsv1b1.ClusterSetIP, wantAff: corev1.ServiceAffinityClientIP, wantIP: true,
			wantSlices: []sliceWant{{source: "west", family: discoveryv1.AddressTypeIPv4, addrs: []string{"10.99.0.1"}, hostnames: []string{""}}},
			clusters:   []string{"east"},
		},
		{
			name: "Headless: a slice per cluster and family, with hostnames",
			recs: []*fedv1.ExportRecord{
				{Cluster: "east", CreateRevision: 1, Service: headless(ep("db-0", "10.1.0.1", "fd00::1"), ep("db-1", "10.1.0.2"))},
				{Cluster: "south", CreateRevision: 2, Service: headless(ep("db-0", "10.2.0.1"))},
			},
			svc: "db", wantType: mcsv1b1.Headless, wantAff: corev1.ServiceAffinityNone,
			wantSlices: []sliceWant{
				{source: "east", family: discoveryv1.AddressTypeIPv4, addrs: []string{"10.1.0.1", "10.1.0.2"}, hostnames: []string{"db-0", "db-1"}},
				{source: "east", family: discoveryv1.AddressTypeIPv6, addrs: []string{"fd00::1"}, hostnames: []string{"db-0"}},
				{source: "south", family: discoveryv1.AddressTypeIPv4, addrs: []string{"10.2.0.1"}, hostnames: []string{"db-0"}},
			},
			clusters: []string{"east", "south"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeImporter(t, "west", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
			v := viewOf(tc.recs...)
			f.reconcile(t, v)
			ctx := context.Background()
			si, err := f.mc.MulticlusterV1beta1().ServiceImports("default").Get(ctx, tc.svc, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if si.Spec.Type != tc.wantType || si.Spec.SessionAffinity != tc.wantAff {
				t.Errorf("ServiceImport type %s affinity %s, want %s %s", si.Spec.Type, si.Spec.SessionAffinity, tc.wantType, tc.wantAff)
			}
			var got []string
			for _, c := range si.Status.Clusters {
				got = append(got, c.Cluster)
			}
			if !slices.Equal(got, tc.clusters) {
				t.Errorf("status.clusters %v, want %v", got, tc.clusters)
			}
			svc, err := f.kc.CoreV1().Services("default").Get(ctx, derivedName(tc.svc), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if (svc.Spec.ClusterIP == corev1.ClusterIPNone) == tc.wantIP {
				t.Errorf("derived Service clusterIP %q, want headless=%v", svc.Spec.ClusterIP, !tc.wantIP)
			}
			list, err := f.kc.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(list.Items) != len(tc.wantSlices) {
				t.Fatalf("%d slices, want %d: %+v", len(list.Items), len(tc.wantSlices), list.Items)
			}
			slices.SortFunc(list.Items, func(a, b discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
			for i, w := range tc.wantSlices {
				es := list.Items[i]
				for k, v := range map[string]string{mcsv1b1.LabelServiceName: tc.svc, mcsv1b1.LabelSourceCluster: w.source,
					discoveryv1.LabelManagedBy: sliceManagedBy, discoveryv1.LabelServiceName: derivedName(tc.svc)} {
					if es.Labels[k] != v {
						t.Errorf("slice %s label %s=%q, want %q", es.Name, k, es.Labels[k], v)
					}
				}
				var addrs, hosts []string
				for _, e := range es.Endpoints {
					addrs = append(addrs, e.Addresses...)
					h := ""
					if e.Hostname != nil {
						h = *e.Hostname
					}
					hosts = append(hosts, h)
				}
				if es.AddressType != w.family || !slices.Equal(addrs, w.addrs) || !slices.Equal(hosts, w.hostnames) {
					t.Errorf("slice %s: %s %v %v, want %s %v %v", es.Name, es.AddressType, addrs, hosts, w.family, w.addrs, w.hostnames)
				}
			}
			// Converged: the same view again writes nothing.
			f.kc.ClearActions()
			f.mc.ClearActions()
			if err := f.im.reconcile(ctx, f.listers(t), v); err != nil {
				t.Fatal(err)
			}
			if n := writes(f.kc.Actions()) + writes(f.mc.Actions()); n != 0 {
				t.Errorf("%d writes for an unchanged view: %v %v", n, f.kc.Actions(), f.mc.Actions())
			}
		})
	}
}

// A service whose oldest export turns headless is re-imported as
// Headless: the derived Service is replaced (its cluster IP is immutable)
// and the gateway slice gives way to the clusters' pods.
func TestImporterFollowsATypeChange(t *testing.T) {
	f := newFakeImporter(t, "west", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
	web := []*fedv1.ServicePort{{Name: "http", Port: 80, Protocol: "TCP"}}
	f.reconcile(t, viewOf(&fedv1.ExportRecord{Cluster: "east", CreateRevision: 1, Service: &fedv1.ExportedService{Namespace: "default", Name: "db", Ports: web}}))
	f.reconcile(t, viewOf(&fedv1.ExportRecord{Cluster: "east", CreateRevision: 1, Service: &fedv1.ExportedService{Namespace: "default", Name: "db", Ports: web,
		Headless: true, HeadlessEndpoints: []*fedv1.HeadlessEndpoint{{Hostname: "db-0", Addresses: []string{"10.1.0.1"}, Ready: true}}}}))
	ctx := context.Background()
	svc, err := f.kc.CoreV1().Services("default").Get(ctx, derivedName("db"), metav1.GetOptions{})
	if err != nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Fatalf("derived Service %+v %v, want headless", svc, err)
	}
	list, err := f.kc.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != 1 || list.Items[0].Labels[mcsv1b1.LabelSourceCluster] != "east" || *list.Items[0].Endpoints[0].Hostname != "db-0" {
		t.Fatalf("slices %+v %v, want east's pod db-0 only", list.Items, err)
	}
}

func TestPlanImportsConflictsAsTheKEPListsThem(t *testing.T) {
	base := func() *fedv1.ExportedService {
		return &fedv1.ExportedService{Namespace: "default", Name: "dns", Ports: []*fedv1.ServicePort{{Name: "dns-tcp", Port: 53, Protocol: "TCP"}, {Name: "dns", Port: 53, Protocol: "UDP"}},
			IpFamilies: []string{"IPv4", "IPv6"}, ExportedLabels: map[string]string{"app": "dns"}, ExportedAnnotations: map[string]string{"a": "1"}}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*fedv1.ExportedService)
		reason string
	}{
		{"the same ports over TCP and UDP agree", func(*fedv1.ExportedService) {}, ""},
		{"a port name on another number", func(s *fedv1.ExportedService) { s.Ports[1].Port = 5353 }, "PortConflict"},
		{"a port number under another name", func(s *fedv1.ExportedService) { s.Ports[1].Name = "domain" }, "PortConflict"},
		{"one more port (the union is imported)", func(s *fedv1.ExportedService) {
			s.Ports = append(s.Ports, &fedv1.ServicePort{Name: "stcp", Port: 142, Protocol: "SCTP"})
		}, "PortConflict"},
		{"one port fewer", func(s *fedv1.ExportedService) { s.Ports = s.Ports[:1] }, "PortConflict"},
		{"the same ports in another order agree", func(s *fedv1.ExportedService) { s.Ports[0], s.Ports[1] = s.Ports[1], s.Ports[0] }, ""},
		{"headless against ClusterSetIP", func(s *fedv1.ExportedService) { s.Headless = true }, "TypeConflict"},
		{"session affinity", func(s *fedv1.ExportedService) { s.SessionAffinity = "ClientIP" }, "SessionAffinityConflict"},
		{"None is the default affinity", func(s *fedv1.ExportedService) { s.SessionAffinity = "None" }, ""},
		{"several at once", func(s *fedv1.ExportedService) { s.Headless = true; s.Ports[0].Name = "x" }, "PortConflict,TypeConflict"},
		{"internal traffic policy", func(s *fedv1.ExportedService) { s.InternalTrafficPolicy = "Local" }, "InternalTrafficPolicyConflict"},
		{"unset internal traffic policy is Cluster", func(s *fedv1.ExportedService) { s.InternalTrafficPolicy = "Cluster" }, ""},
		{"traffic distribution", func(s *fedv1.ExportedService) { s.TrafficDistribution = "PreferClose" }, "TrafficDistributionConflict"},
		{"IP families of ClusterSetIP exports (the gateways reach every pod)", func(s *fedv1.ExportedService) { s.IpFamilies = []string{"IPv6"} }, ""},
		{"exported labels", func(s *fedv1.ExportedService) { s.ExportedLabels = map[string]string{"tier": "front"} }, "LabelsConflict"},
		{"exported annotations", func(s *fedv1.ExportedService) { s.ExportedAnnotations = map[string]string{"a": "2"} }, "AnnotationsConflict"},
		{"labels, annotations and traffic", func(s *fedv1.ExportedService) {
			s.ExportedAnnotations, s.ExportedLabels, s.TrafficDistribution = nil, nil, "PreferClose"
		}, "TrafficDistributionConflict,LabelsConflict,AnnotationsConflict"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			young := base()
			tc.mutate(young)
			v := viewOf(&fedv1.ExportRecord{Cluster: "west", CreateRevision: 7, Service: young},
				&fedv1.ExportRecord{Cluster: "east", CreateRevision: 4, Service: base()})
			plans, conflicts := planImports("west", v)
			if got := conflicts["default/dns"].Reason; got != tc.reason {
				t.Fatalf("west's conflict %q (%s), want %q", got, conflicts["default/dns"].Message, tc.reason)
			}
			p := plans["default/dns"]
			if p.Headless || len(p.Ports) < 2 || p.TrafficDistribution != "" || p.InternalTrafficPolicy != "" ||
				!slices.Equal(p.IPFamilies, []string{"IPv4", "IPv6"}) || !maps.Equal(p.Labels, base().ExportedLabels) || !maps.Equal(p.Annotations, base().ExportedAnnotations) {
				t.Fatalf("plan %+v: the oldest export (east, ClusterSetIP, both ports, dual-stack, its labels and annotations) must win", p)
			}
			// The oldest export shows the same reasons (the conformance
			// suite wants Conflict on every constituent export), and
			// still serves.
			_, c := planImports("east", v)
			if got := c["default/dns"]; got.Reason != tc.reason || tc.reason != "" && !strings.Contains(got.Message, "west") {
				t.Fatalf("the oldest export's conflict %+v, want %q naming west", got, tc.reason)
			}
			if p.Clusters[0].Cluster != "east" || p.Clusters[0].portConflict() {
				t.Fatalf("clusters %+v: east, the oldest, must serve", p.Clusters)
			}
			// Only clashing ports keep the younger export from serving.
			if clash := portsConflict(base().GetPorts(), young.GetPorts()) != ""; p.Clusters[1].portConflict() != clash {
				t.Fatalf("west serves the import: %v, want %v (its ports clash: %v)", !p.Clusters[1].portConflict(), !clash, clash)
			}
		})
	}
}

// Exports whose ports differ without clashing import the union of their
// ports, in create order, and both show the conflict (the conformance
// suite's "union of the constituent service ports" spec).
func TestPlanImportsTheUnionOfDifferingPorts(t *testing.T) {
	c1 := &fedv1.ExportedService{Namespace: "default", Name: "hello", Ports: []*fedv1.ServicePort{{Name: "tcp", Port: 42, Protocol: "TCP"}, {Name: "udp", Port: 42, Protocol: "UDP"}}}
	c2 := &fedv1.ExportedService{Namespace: "default", Name: "hello", Ports: []*fedv1.ServicePort{{Name: "tcp", Port: 42, Protocol: "TCP"}, {Name: "stcp", Port: 142, Protocol: "SCTP"}}}
	v := viewOf(&fedv1.ExportRecord{Cluster: "c1", CreateRevision: 1, Service: c1}, &fedv1.ExportRecord{Cluster: "c2", CreateRevision: 2, Service: c2})
	for _, self := range []string{"c1", "c2"} {
		plans, conflicts := planImports(self, v)
		if conflicts["default/hello"].Reason != "PortConflict" {
			t.Errorf("%s: conflict %+v, want PortConflict", self, conflicts["default/hello"])
		}
		var got []string
		for _, p := range plans["default/hello"].Ports {
			got = append(got, fmt.Sprintf("%s %d/%s", p.GetName(), p.GetPort(), p.GetProtocol()))
		}
		if want := []string{"tcp 42/TCP", "udp 42/UDP", "stcp 142/SCTP"}; !slices.Equal(got, want) {
			t.Errorf("%s: import ports %v, want %v", self, got, want)
		}
		for _, c := range plans["default/hello"].Clusters {
			if c.portConflict() {
				t.Errorf("%s: cluster %s takes no traffic; its ports do not clash", self, c.Cluster)
			}
		}
	}
}

// IP families conflict only between headless exports, whose clients
// reach the pods' own addresses.
func TestPlanImportsIPFamilyConflictBetweenHeadlessExports(t *testing.T) {
	svc := func(headless bool, fams ...string) *fedv1.ExportedService {
		return &fedv1.ExportedService{Namespace: "default", Name: "db", Ports: []*fedv1.ServicePort{{Name: "pg", Port: 5432, Protocol: "TCP"}},
			Headless: headless, IpFamilies: fams}
	}
	for _, tc := range []struct {
		name          string
		oldest, young *fedv1.ExportedService
		reason        string
	}{
		{"single-stack against dual-stack", svc(true, "IPv4", "IPv6"), svc(true, "IPv6"), "IPFamilyConflict"},
		{"the same families, another primary", svc(true, "IPv4", "IPv6"), svc(true, "IPv6", "IPv4"), ""},
		{"unknown (an older agent)", svc(true, "IPv4"), svc(true), ""},
		{"ClusterSetIP exports", svc(false, "IPv4"), svc(false, "IPv6"), ""},
		{"headless against ClusterSetIP: the type only", svc(true, "IPv4", "IPv6"), svc(false, "IPv4"), "TypeConflict"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := viewOf(&fedv1.ExportRecord{Cluster: "east", CreateRevision: 1, Service: tc.oldest},
				&fedv1.ExportRecord{Cluster: "west", CreateRevision: 2, Service: tc.young})
			plans, c := planImports("west", v)
			if got := c["default/db"].Reason; got != tc.reason {
				t.Fatalf("conflict %q, want %q", got, tc.reason)
			}
			if p := plans["default/db"]; !slices.Equal(p.IPFamilies, tc.oldest.GetIpFamilies()) {
				t.Fatalf("plan families %v, want the oldest's %v", p.IPFamilies, tc.oldest.GetIpFamilies())
			}
		})
	}
}

func TestServiceExportConditionsUseTheKEPTypesAndReasons(t *testing.T) {
	for _, tc := range []struct {
		name     string
		reason   string
		conflict importConflict
		sync     syncState
		want     map[string]string // type → status/reason
	}{
		{"exported", "", importConflict{}, syncState{connected: true, published: true},
			map[string]string{"Valid": "True/Valid", "Conflict": "False/NoConflicts", "Ready": "True/Exported", ConditionSynced: "True/Published"}},
		{"losing a type conflict", "", importConflict{Reason: "TypeConflict", Message: "m"}, syncState{connected: true, published: true},
			map[string]string{"Valid": "True/Valid", "Conflict": "True/TypeConflict", "Ready": "True/Exported"}},
		{"waiting for the hub", "", importConflict{}, syncState{connected: false},
			map[string]string{"Ready": "False/Pending", ConditionSynced: "False/HubUnreachable"}},
		{"invalid", string(mcsv1b1.ServiceExportReasonInvalidServiceType), importConflict{}, syncState{connected: true},
			map[string]string{"Valid": "False/InvalidServiceType", "Ready": "False/Failed", ConditionSynced: "False/Invalid"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			se := export("web")
			mc := mcsfake.NewSimpleClientset(se)
			s := &kubeSource{mcs: mc}
			if err := s.setConditions(context.Background(), se, tc.reason, "why", tc.conflict, tc.sync); err != nil {
				t.Fatal(err)
			}
			got, err := mc.MulticlusterV1beta1().ServiceExports("default").Get(context.Background(), "web", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for typ, want := range tc.want {
				c := apimeta.FindStatusCondition(got.Status.Conditions, typ)
				if c == nil || string(c.Status)+"/"+c.Reason != want {
					t.Errorf("condition %s = %+v, want %s", typ, c, want)
				}
			}
		})
	}
}

func TestCheckClusterIDAgreesWritesOrRefuses(t *testing.T) {
	prop := func(v string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "about.k8s.io/v1alpha1", "kind": "ClusterProperty",
			"metadata": map[string]any{"name": ClusterIDProperty}, "spec": map[string]any{"value": v}}}
	}
	for _, tc := range []struct {
		name     string
		existing string // "" = absent
		write    bool
		want     string // the property afterwards, "" = absent
		mismatch bool
	}{
		{"absent, join only reads", "", false, "", false},
		{"absent, the agent writes it", "", true, "west", false},
		{"present and equal", "west", true, "west", false},
		{"present and different", "east", true, "east", true},
		{"present and different at join", "east", false, "east", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var objs []runtime.Object
			if tc.existing != "" {
				objs = append(objs, prop(tc.existing))
			}
			dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
				map[schema.GroupVersionResource]string{clusterPropertyGVR: "ClusterPropertyList"}, objs...)
			err := checkClusterID(context.Background(), dyn, federation.MustClusterName("west"), tc.write, testLogger(t, "west"))
			var me *ClusterIDMismatchError
			if tc.mismatch != errors.Is(err, ErrClusterIDMismatch) || (tc.mismatch && (!errors.As(err, &me) || me.Property != tc.existing || me.Cluster != "west")) {
				t.Fatalf("err %v, want mismatch=%v naming %q and west", err, tc.mismatch, tc.existing)
			}
			if !tc.mismatch && err != nil {
				t.Fatal(err)
			}
			got, err := dyn.Resource(clusterPropertyGVR).Get(context.Background(), ClusterIDProperty, metav1.GetOptions{})
			v := ""
			if err == nil {
				v, _, _ = unstructured.NestedString(got.Object, "spec", "value")
			}
			if tc.want == "" && err == nil || tc.want != "" && v != tc.want {
				t.Fatalf("property %q (%v), want %q", v, err, tc.want)
			}
		})
	}
}

// allocateClusterIPs makes the fake clientset allocate cluster IPs as a
// dual-stack API server would: one per family the Service's policy asks
// for, IPv4 first.
func allocateClusterIPs(kc *kubefake.Clientset) {
	kc.PrependReactor("create", "services", func(a k8stesting.Action) (bool, runtime.Object, error) {
		s := a.(k8stesting.CreateAction).GetObject().(*corev1.Service)
		if s.Spec.ClusterIP == corev1.ClusterIPNone {
			return false, nil, nil
		}
		s.Spec.ClusterIP, s.Spec.ClusterIPs, s.Spec.IPFamilies = "10.96.0.7", []string{"10.96.0.7"}, []corev1.IPFamily{corev1.IPv4Protocol}
		if ipFamilyPolicy(s) != corev1.IPFamilyPolicySingleStack {
			s.Spec.ClusterIPs = append(s.Spec.ClusterIPs, "fd00:96::7")
			s.Spec.IPFamilies = append(s.Spec.IPFamilies, corev1.IPv6Protocol)
		}
		return false, nil, nil
	})
}

func TestImporterCopiesTheServiceSpecAndExportedMetadata(t *testing.T) {
	web := []*fedv1.ServicePort{{Name: "http", Port: 80, Protocol: "HTTP"}}
	full := func(mutate func(*fedv1.ExportedService)) *fedv1.ExportedService {
		s := &fedv1.ExportedService{Namespace: "default", Name: "web", Ports: web, IpFamilies: []string{"IPv4", "IPv6"},
			InternalTrafficPolicy: "Local", TrafficDistribution: "PreferClose",
			ExportedLabels:      map[string]string{"tier": "front", LabelManagedBy: "someone-else"},
			ExportedAnnotations: map[string]string{"example.com/owner": "team a", AnnotationEgressPorts: "http=1"},
			Endpoints:           []*fedv1.EndpointGroup{{Ready: 1}}}
		if mutate != nil {
			mutate(s)
		}
		return s
	}
	for _, tc := range []struct {
		name     string
		svc      *fedv1.ExportedService
		younger  *fedv1.ExportedService // from a second cluster, later
		wantSpec mcsv1b1.ServiceImportSpec
		wantPol  corev1.IPFamilyPolicy // the derived Service's
		labels   map[string]string     // exported labels and annotations wanted
		anns     map[string]string
	}{
		{
			name: "dual-stack ClusterSetIP: an IP of each family, the policies, the exported metadata",
			svc:  full(nil),
			wantSpec: mcsv1b1.ServiceImportSpec{Type: mcsv1b1.ClusterSetIP, IPs: []string{"10.96.0.7", "fd00:96::7"},
				IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}, SessionAffinity: corev1.ServiceAffinityNone,
				InternalTrafficPolicy: ptr(corev1.ServiceInternalTrafficPolicyLocal), TrafficDistribution: ptr(corev1.ServiceTrafficDistributionPreferClose)},
			wantPol: corev1.IPFamilyPolicyPreferDualStack,
			labels:  map[string]string{"tier": "front"}, anns: map[string]string{"example.com/owner": "team a"},
		},
		{
			name: "single-stack, nothing set: one IP, no policies, no metadata",
			svc: full(func(s *fedv1.ExportedService) {
				s.IpFamilies, s.InternalTrafficPolicy, s.TrafficDistribution, s.ExportedLabels, s.ExportedAnnotations = []string{"IPv6"}, "", "", nil, nil
			}),
			wantSpec: mcsv1b1.ServiceImportSpec{Type: mcsv1b1.ClusterSetIP, IPs: []string{"10.96.0.7"}, IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
				SessionAffinity: corev1.ServiceAffinityNone},
			wantPol: corev1.IPFamilyPolicySingleStack,
		},
		{
			name: "headless: no IPs, the export's families",
			svc: full(func(s *fedv1.ExportedService) {
				s.Headless, s.IpFamilies = true, []string{"IPv6", "IPv4"}
				s.HeadlessEndpoints = []*fedv1.HeadlessEndpoint{{Hostname: "web-0", Addresses: []string{"10.1.0.1", "fd00::1"}, Ready: true}}
			}),
			wantSpec: mcsv1b1.ServiceImportSpec{Type: mcsv1b1.Headless, IPFamilies: []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol},
				SessionAffinity: corev1.ServiceAffinityNone, InternalTrafficPolicy: ptr(corev1.ServiceInternalTrafficPolicyLocal),
				TrafficDistribution: ptr(corev1.ServiceTrafficDistributionPreferClose)},
			wantPol: corev1.IPFamilyPolicySingleStack, // unset: the API server's default for a headless Service
			labels:  map[string]string{"tier": "front"}, anns: map[string]string{"example.com/owner": "team a"},
		},
		{
			name: "a younger export conflicting on everything changes nothing",
			svc:  full(nil),
			younger: full(func(s *fedv1.ExportedService) {
				s.IpFamilies, s.InternalTrafficPolicy, s.TrafficDistribution = []string{"IPv6"}, "Cluster", ""
				s.ExportedLabels, s.ExportedAnnotations = map[string]string{"tier2": "x"}, map[string]string{"b": "2"}
			}),
			wantSpec: mcsv1b1.ServiceImportSpec{Type: mcsv1b1.ClusterSetIP, IPs: []string{"10.96.0.7", "fd00:96::7"},
				IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}, SessionAffinity: corev1.ServiceAffinityNone,
				InternalTrafficPolicy: ptr(corev1.ServiceInternalTrafficPolicyLocal), TrafficDistribution: ptr(corev1.ServiceTrafficDistributionPreferClose)},
			wantPol: corev1.IPFamilyPolicyPreferDualStack,
			labels:  map[string]string{"tier": "front"}, anns: map[string]string{"example.com/owner": "team a"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeImporter(t, "west", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
			allocateClusterIPs(f.kc)
			recs := []*fedv1.ExportRecord{{Cluster: "east", CreateRevision: 1, Service: tc.svc}}
			if tc.younger != nil {
				recs = append(recs, &fedv1.ExportRecord{Cluster: "south", CreateRevision: 2, Service: tc.younger})
			}
			f.reconcile(t, viewOf(recs...))
			ctx := context.Background()
			si, err := f.mc.MulticlusterV1beta1().ServiceImports("default").Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got := si.Spec
			got.Ports = nil
			if !equality.Semantic.DeepEqual(got, tc.wantSpec) {
				t.Errorf("ServiceImport spec\n%+v\nwant\n%+v", got, tc.wantSpec)
			}
			svc, err := f.kc.CoreV1().Services("default").Get(ctx, derivedName("web"), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if ipFamilyPolicy(svc) != tc.wantPol {
				t.Errorf("derived Service ipFamilyPolicy %s, want %s", ipFamilyPolicy(svc), tc.wantPol)
			}
			// The exported metadata, and the agent's own, which wins a clash.
			wantLabels := maps.Clone(tc.labels)
			if wantLabels == nil {
				wantLabels = map[string]string{}
			}
			wantLabels[LabelManagedBy], wantLabels[LabelService] = ManagedByValue, "web"
			if !maps.Equal(si.Labels, wantLabels) {
				t.Errorf("ServiceImport labels %v, want %v", si.Labels, wantLabels)
			}
			wantAnns := maps.Clone(tc.anns)
			if wantAnns == nil {
				wantAnns = map[string]string{}
			}
			wantAnns[AnnotationEgressPorts] = "http=15000"
			if !maps.Equal(si.Annotations, wantAnns) {
				t.Errorf("ServiceImport annotations %v, want %v", si.Annotations, wantAnns)
			}
		})
	}
}

// When the oldest export changes what it exports, the ServiceImport
// follows: labels no longer exported are removed, and the derived Service
// goes from dual-stack to single-stack.
func TestImporterFollowsTheOldestExportsChanges(t *testing.T) {
	f := newFakeImporter(t, "west", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
	allocateClusterIPs(f.kc)
	web := []*fedv1.ServicePort{{Name: "http", Port: 80, Protocol: "TCP"}}
	f.reconcile(t, viewOf(&fedv1.ExportRecord{Cluster: "east", CreateRevision: 1, Service: &fedv1.ExportedService{Namespace: "default", Name: "web",
		Ports: web, IpFamilies: []string{"IPv4", "IPv6"}, ExportedLabels: map[string]string{"a": "1"}, ExportedAnnotations: map[string]string{"x": "1"}}}))
	f.reconcile(t, viewOf(&fedv1.ExportRecord{Cluster: "east", CreateRevision: 1, Service: &fedv1.ExportedService{Namespace: "default", Name: "web",
		Ports: web, IpFamilies: []string{"IPv4"}, InternalTrafficPolicy: "Local", ExportedLabels: map[string]string{"b": "2"}}}))
	ctx := context.Background()
	si, err := f.mc.MulticlusterV1beta1().ServiceImports("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if si.Labels["a"] != "" || si.Labels["b"] != "2" || si.Annotations["x"] != "" || !isOwned(si) || si.Annotations[AnnotationEgressPorts] == "" {
		t.Errorf("ServiceImport labels %v annotations %v, want b only besides the agent's own", si.Labels, si.Annotations)
	}
	if !ptrEq(si.Spec.InternalTrafficPolicy, ptr(corev1.ServiceInternalTrafficPolicyLocal)) {
		t.Errorf("internalTrafficPolicy %v, want Local", si.Spec.InternalTrafficPolicy)
	}
	svc, err := f.kc.CoreV1().Services("default").Get(ctx, derivedName("web"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ipFamilyPolicy(svc) != corev1.IPFamilyPolicySingleStack {
		t.Errorf("derived Service ipFamilyPolicy %s, want SingleStack", ipFamilyPolicy(svc))
	}
}

// Every cluster of the clusterset gets the ServiceImport (KEP-1645), the
// one exporting it alone included.
func TestImporterImportsInTheExportingClusterToo(t *testing.T) {
	f := newFakeImporter(t, "east", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
	f.reconcile(t, viewOf(&fedv1.ExportRecord{Cluster: "east", CreateRevision: 1, Service: &fedv1.ExportedService{Namespace: "default", Name: "web",
		Ports: []*fedv1.ServicePort{{Name: "http", Port: 80, Protocol: "TCP"}}}}))
	si, err := f.mc.MulticlusterV1beta1().ServiceImports("default").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("no ServiceImport in the only exporting cluster: %v", err)
	}
	if len(si.Status.Clusters) != 1 || si.Status.Clusters[0].Cluster != "east" {
		t.Fatalf("status.clusters %v, want east", si.Status.Clusters)
	}
}

// SCTP ports are imported with their protocol: on the ServiceImport (the
// MCS port union is keyed by port and protocol) and on the derived
// Service. Gateways carry TCP only; the ports are there for the MCS API.
func TestImporterKeepsSCTPPorts(t *testing.T) {
	f := newFakeImporter(t, "west", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
	allocateClusterIPs(f.kc)
	ports := []*fedv1.ServicePort{{Name: "dns-tcp", Port: 53, Protocol: "TCP"}, {Name: "dns", Port: 53, Protocol: "UDP"}, {Name: "dns-sctp", Port: 53, Protocol: "SCTP"}}
	f.reconcile(t, viewOf(&fedv1.ExportRecord{Cluster: "east", CreateRevision: 1, Service: &fedv1.ExportedService{Namespace: "default", Name: "dns",
		Ports: ports, Endpoints: []*fedv1.EndpointGroup{{Ready: 1}}}}))
	ctx := context.Background()
	si, err := f.mc.MulticlusterV1beta1().ServiceImports("default").Get(ctx, "dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range si.Spec.Ports {
		got = append(got, fmt.Sprintf("%s %d/%s", p.Name, p.Port, p.Protocol))
	}
	if want := []string{"dns-tcp 53/TCP", "dns 53/UDP", "dns-sctp 53/SCTP"}; !slices.Equal(got, want) {
		t.Errorf("ServiceImport ports %v, want %v", got, want)
	}
	svc, err := f.kc.CoreV1().Services("default").Get(ctx, derivedName("dns"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, p := range svc.Spec.Ports {
		got = append(got, fmt.Sprintf("%s %d/%s", p.Name, p.Port, p.Protocol))
	}
	if want := []string{"dns-tcp 53/TCP", "dns 53/UDP", "dns-sctp 53/SCTP"}; !slices.Equal(got, want) {
		t.Errorf("derived Service ports %v, want %v", got, want)
	}
}
