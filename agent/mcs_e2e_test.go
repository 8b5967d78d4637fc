package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	mcsv1b1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/meshfed/meshfed/testenv"
)

// createHeadlessExport creates a headless Service ns/name with pods
// name-0 (dual-stack: in the IPv4 and the IPv6 slice) and name-1 (IPv4),
// as a StatefulSet's, with hostnames, and exports it.
func createHeadlessExport(t testing.TB, kc kubernetes.Interface, mc mcsclient.Interface, ns, name string) {
	t.Helper()
	ctx := context.Background()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone,
		Ports: []corev1.ServicePort{{Name: "http", Port: 5432, Protocol: corev1.ProtocolTCP}}}}
	if _, err := kc.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ready := true
	pn, pp := "http", int32(5432)
	ep := func(addr, pod string) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{addr}, Hostname: &pod, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}}
	}
	for _, es := range []*discoveryv1.EndpointSlice{
		{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-v4", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4, Endpoints: []discoveryv1.Endpoint{ep("10.1.0.10", name+"-0"), ep("10.1.0.11", name+"-1")},
			Ports: []discoveryv1.EndpointPort{{Name: &pn, Port: &pp}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-v6", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv6, Endpoints: []discoveryv1.Endpoint{ep("fd00::10", name+"-0")},
			Ports: []discoveryv1.EndpointPort{{Name: &pn, Port: &pp}}},
	} {
		if _, err := kc.DiscoveryV1().EndpointSlices(ns).Create(ctx, es, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	se := &mcsv1b1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if _, err := mc.MulticlusterV1beta1().ServiceExports(ns).Create(ctx, se, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func clusterProperty(ctx context.Context, dyn dynamic.Interface) (string, error) {
	cp, err := dyn.Resource(clusterPropertyGVR).Get(ctx, ClusterIDProperty, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	v, _, err := unstructured.NestedString(cp.Object, "spec", "value")
	return v, err
}

// TestKubeMCSSemantics runs two agents against real kube-apiservers and a
// hub: the cluster ID check (KEP-2149), a headless dual-stack export
// imported as Headless with hostnames and one count per pod, the KEP's
// EndpointSlice labels, ServiceExport conditions, a type conflict lost by
// the younger export, 53/TCP + 53/UDP accepted end to end, the
// ServiceImport's spec and exported metadata in both clusters (the
// exporting one too) as the upstream conformance suite checks them, with
// a labels conflict, and ExternalName refused.
func TestKubeMCSSemantics(t *testing.T) {
	ew := startEastWest(t, 1)
	admin, east, west := ew.admin, ew.east, ew.west
	emc, wmc, ekc, wkc := ew.emc, ew.wmc, ew.ekc, ew.wkc
	ctx := context.Background()
	wdyn, err := dynamic.NewForConfig(west.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	edyn, err := dynamic.NewForConfig(east.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}

	// west already has an ID, and it is not "west": the join is refused,
	// naming both, before the token is spent.
	prop := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "about.k8s.io/v1alpha1", "kind": "ClusterProperty",
		"metadata": map[string]any{"name": ClusterIDProperty}, "spec": map[string]any{"value": "west-old"}}}
	if _, err := wdyn.Resource(clusterPropertyGVR).Create(ctx, prop, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ecfg, wcfg := kubeConfig(t, east, t.TempDir()), kubeConfig(t, west, t.TempDir())
	wtoken := createToken(t, admin, "west")
	err = Join(ctx, wcfg, wtoken)
	var mismatch *ClusterIDMismatchError
	if !errors.Is(err, ErrClusterIDMismatch) || !errors.As(err, &mismatch) || mismatch.Property != "west-old" || mismatch.Cluster != "west" ||
		!strings.Contains(err.Error(), `"west-old"`) || !strings.Contains(err.Error(), `"west"`) {
		t.Fatalf("join under another cluster ID: %v, want a ClusterIDMismatchError naming west-old and west", err)
	}
	if err := wdyn.Resource(clusterPropertyGVR).Delete(ctx, ClusterIDProperty, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := Join(ctx, wcfg, wtoken); err != nil {
		t.Fatalf("join with the same token once the ID agrees: %v", err)
	}
	if err := Join(ctx, ecfg, createToken(t, admin, "east")); err != nil {
		t.Fatal(err)
	}
	ea := startAgent(t, ecfg)
	_ = startAgent(t, wcfg)
	// Absent, the ID is written by the running agent.
	for _, c := range []struct {
		dyn  dynamic.Interface
		want string
	}{{edyn, "east"}, {wdyn, "west"}} {
		if err := testenv.WaitFor(ctx, 30*time.Second, func(ctx context.Context) error {
			v, err := clusterProperty(ctx, c.dyn)
			if err == nil && v != c.want {
				return fmt.Errorf("ClusterProperty %q, want %q", v, c.want)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("HeadlessImport", func(t *testing.T) {
		createHeadlessExport(t, ekc, emc, "default", "db")
		waitCondition(t, emc, "default", "db", "Valid", metav1.ConditionTrue, "Valid")
		waitCondition(t, emc, "default", "db", "Ready", metav1.ConditionTrue, string(mcsv1b1.ServiceExportReasonExported))
		waitCondition(t, emc, "default", "db", "Conflict", metav1.ConditionFalse, string(mcsv1b1.ServiceExportReasonNoConflicts))
		if err := testenv.WaitFor(ctx, 30*time.Second, func(ctx context.Context) error {
			si, err := wmc.MulticlusterV1beta1().ServiceImports("default").Get(ctx, "db", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if si.Spec.Type != mcsv1b1.Headless || len(si.Spec.IPs) != 0 {
				return fmt.Errorf("ServiceImport type %s ips %v, want Headless without IPs", si.Spec.Type, si.Spec.IPs)
			}
			if len(si.Status.Clusters) != 1 || si.Status.Clusters[0].Cluster != "east" {
				return fmt.Errorf("status.clusters %v, want east", si.Status.Clusters)
			}
			svc, err := wkc.CoreV1().Services("default").Get(ctx, derivedName("db"), metav1.GetOptions{})
			if err != nil {
				return err
			}
			if svc.Spec.ClusterIP != corev1.ClusterIPNone {
				return fmt.Errorf("derived Service clusterIP %q, want None", svc.Spec.ClusterIP)
			}
			list, err := wkc.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: mcsv1b1.LabelServiceName + "=db"})
			if err != nil {
				return err
			}
			got := map[discoveryv1.AddressType][]string{}
			for _, es := range list.Items {
				if es.Labels[mcsv1b1.LabelSourceCluster] != "east" || es.Labels[discoveryv1.LabelManagedBy] != sliceManagedBy ||
					es.Labels[discoveryv1.LabelServiceName] != derivedName("db") {
					return fmt.Errorf("slice %s labels %v", es.Name, es.Labels)
				}
				if len(es.Ports) != 1 || *es.Ports[0].Port != 5432 {
					return fmt.Errorf("slice %s ports %+v, want the pods' 5432", es.Name, es.Ports)
				}
				for _, e := range es.Endpoints {
					got[es.AddressType] = append(got[es.AddressType], *e.Hostname+"="+e.Addresses[0])
				}
			}
			slices.Sort(got[discoveryv1.AddressTypeIPv4])
			if !slices.Equal(got[discoveryv1.AddressTypeIPv4], []string{"db-0=10.1.0.10", "db-1=10.1.0.11"}) ||
				!slices.Equal(got[discoveryv1.AddressTypeIPv6], []string{"db-0=fd00::10"}) {
				return fmt.Errorf("imported endpoints %v", got)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		// Two pods, one of them dual-stack: two ready endpoints.
		st := ea.a.State()
		if p := findImport(st, "default/db"); p == nil || len(p.Clusters) != 1 || p.Clusters[0].Ready != 2 {
			t.Fatalf("import %+v, want east with ready=2", p)
		}
	})

	t.Run("TypeConflictOldestWins", func(t *testing.T) {
		// west exports db later, as a ClusterSetIP service with the same port.
		createExport(t, wkc, wmc, "default", "db", 5432, corev1.ServiceTypeClusterIP, "us-west-1a")
		waitCondition(t, wmc, "default", "db", "Conflict", metav1.ConditionTrue, string(mcsv1b1.ServiceExportReasonTypeConflict))
		waitCondition(t, emc, "default", "db", "Conflict", metav1.ConditionTrue, string(mcsv1b1.ServiceExportReasonTypeConflict))
		if err := testenv.WaitFor(ctx, 30*time.Second, func(ctx context.Context) error {
			si, err := emc.MulticlusterV1beta1().ServiceImports("default").Get(ctx, "db", metav1.GetOptions{})
			if err != nil {
				return err
			}
			var cs []string
			for _, c := range si.Status.Clusters {
				cs = append(cs, c.Cluster)
			}
			if si.Spec.Type != mcsv1b1.Headless || !slices.Equal(cs, []string{"east", "west"}) {
				return fmt.Errorf("ServiceImport %s clusters %v, want Headless from east and west", si.Spec.Type, cs)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		c := func() *metav1.Condition {
			se, err := wmc.MulticlusterV1beta1().ServiceExports("default").Get(ctx, "db", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return apimeta.FindStatusCondition(se.Status.Conditions, "Conflict")
		}()
		if !strings.Contains(c.Message, "east") {
			t.Errorf("conflict message %q does not name the winner", c.Message)
		}
	})

	t.Run("OnePortOverTCPAndUDP", func(t *testing.T) {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "dns"}, Spec: corev1.ServiceSpec{
			Ports: []corev1.ServicePort{{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}}}
		if _, err := ekc.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		se := &mcsv1b1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "dns"}}
		if _, err := emc.MulticlusterV1beta1().ServiceExports("default").Create(ctx, se, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// Valid here, and accepted by the hub.
		waitCondition(t, emc, "default", "dns", "Valid", metav1.ConditionTrue, "Valid")
		waitCondition(t, emc, "default", "dns", ConditionSynced, metav1.ConditionTrue, ReasonPublished)
		waitCondition(t, emc, "default", "dns", "Ready", metav1.ConditionTrue, string(mcsv1b1.ServiceExportReasonExported))
		if err := testenv.WaitFor(ctx, 30*time.Second, func(ctx context.Context) error {
			si, err := wmc.MulticlusterV1beta1().ServiceImports("default").Get(ctx, "dns", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if len(si.Spec.Ports) != 2 {
				return fmt.Errorf("ports %+v, want 53/TCP and 53/UDP", si.Spec.Ports)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ServiceImportSpecAndExportedMetadata", func(t *testing.T) {
		// As the upstream conformance suite's hello Service: 42/TCP and
		// 42/UDP, ClientIP affinity, PreferDualStack; plus the traffic
		// fields, and labels and annotations of its own (not exported).
		hello := func(kc kubernetes.Interface) *corev1.Service {
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hello", Labels: map[string]string{"dummy-svc": "dummy"},
				Annotations: map[string]string{"dummy-svc": "dummy"}}, Spec: corev1.ServiceSpec{
				Ports:                 []corev1.ServicePort{{Name: "tcp", Port: 42, Protocol: corev1.ProtocolTCP}, {Name: "udp", Port: 42, Protocol: corev1.ProtocolUDP}},
				SessionAffinity:       corev1.ServiceAffinityClientIP,
				SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(10))}},
				IPFamilyPolicy:        ptr(corev1.IPFamilyPolicyPreferDualStack),
				InternalTrafficPolicy: ptr(corev1.ServiceInternalTrafficPolicyCluster),
				TrafficDistribution:   ptr(corev1.ServiceTrafficDistributionPreferClose)}}
			out, err := kc.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		exportHello := func(mc mcsclient.Interface, suffix string) {
			se := &mcsv1b1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hello",
				Labels: map[string]string{"dummy-svcexport": "dummy"}, Annotations: map[string]string{"dummy-svcexport": "dummy"}},
				Spec: mcsv1b1.ServiceExportSpec{ExportedLabels: map[string]string{"dummy-label" + suffix: "true"},
					ExportedAnnotations: map[string]string{"dummy-annotation" + suffix: "true"}}}
			if _, err := mc.MulticlusterV1beta1().ServiceExports("default").Create(ctx, se, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		svc := hello(ekc)
		exportHello(emc, "")
		waitCondition(t, emc, "default", "hello", "Valid", metav1.ConditionTrue, "Valid")
		// checkImport checks the ServiceImport as the conformance suite
		// does, plus that only the first export's metadata is on it.
		checkImport := func(ctx context.Context, mc mcsclient.Interface) error {
			si, err := mc.MulticlusterV1beta1().ServiceImports("default").Get(ctx, "hello", metav1.GetOptions{})
			if err != nil {
				return err
			}
			sp := si.Spec
			if sp.Type != mcsv1b1.ClusterSetIP || len(sp.Ports) != 2 || sp.SessionAffinity != corev1.ServiceAffinityClientIP ||
				sp.SessionAffinityConfig == nil || *sp.SessionAffinityConfig.ClientIP.TimeoutSeconds != 10 {
				return fmt.Errorf("ServiceImport spec %+v, want ClusterSetIP, 2 ports, ClientIP for 10 s", sp)
			}
			if !ptrEq(sp.InternalTrafficPolicy, svc.Spec.InternalTrafficPolicy) || !ptrEq(sp.TrafficDistribution, svc.Spec.TrafficDistribution) {
				return fmt.Errorf("internalTrafficPolicy %v trafficDistribution %v, want the Service's", sp.InternalTrafficPolicy, sp.TrafficDistribution)
			}
			if len(sp.IPs) == 0 || len(sp.IPs) != len(sp.IPFamilies) {
				return fmt.Errorf("ips %v ipFamilies %v, want one IP per family", sp.IPs, sp.IPFamilies)
			}
			for i, ip := range sp.IPs {
				a, err := netip.ParseAddr(ip)
				if err != nil || a.Is4() != (sp.IPFamilies[i] == corev1.IPv4Protocol) {
					return fmt.Errorf("ips[%d] %q is not of family %s", i, ip, sp.IPFamilies[i])
				}
			}
			if si.Labels["dummy-label"] != "true" || si.Annotations["dummy-annotation"] != "true" {
				return fmt.Errorf("labels %v annotations %v, want the exported ones", si.Labels, si.Annotations)
			}
			for _, m := range []map[string]string{si.Labels, si.Annotations} {
				for _, k := range []string{"dummy-svc", "dummy-svcexport", "dummy-label2", "dummy-annotation2"} {
					if _, ok := m[k]; ok {
						return fmt.Errorf("labels %v annotations %v: %s was not exported by the oldest export", si.Labels, si.Annotations, k)
					}
				}
			}
			return nil
		}
		// In both clusters, the one exporting it included.
		for _, mc := range []mcsclient.Interface{emc, wmc} {
			if err := testenv.WaitFor(ctx, 30*time.Second, func(ctx context.Context) error { return checkImport(ctx, mc) }); err != nil {
				t.Fatal(err)
			}
		}
		// west exports hello later with other labels and annotations: both
		// exports show the conflict, east's metadata stays.
		hello(wkc)
		exportHello(wmc, "2")
		want := string(mcsv1b1.ServiceExportReasonLabelsConflict) + "," + string(mcsv1b1.ServiceExportReasonAnnotationsConflict)
		waitCondition(t, wmc, "default", "hello", "Conflict", metav1.ConditionTrue, want)
		waitCondition(t, emc, "default", "hello", "Conflict", metav1.ConditionTrue, want)
		for _, mc := range []mcsclient.Interface{emc, wmc} {
			if err := testenv.WaitFor(ctx, 30*time.Second, func(ctx context.Context) error { return checkImport(ctx, mc) }); err != nil {
				t.Fatal(err)
			}
		}
		// Unexported everywhere: the ServiceImport goes from both.
		for _, mc := range []mcsclient.Interface{emc, wmc} {
			if err := mc.MulticlusterV1beta1().ServiceExports("default").Delete(ctx, "hello", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		for _, mc := range []mcsclient.Interface{emc, wmc} {
			if err := testenv.WaitFor(ctx, 30*time.Second, func(ctx context.Context) error {
				_, err := mc.MulticlusterV1beta1().ServiceImports("default").Get(ctx, "hello", metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return nil
				}
				return fmt.Errorf("ServiceImport still there (%v)", err)
			}); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("ExternalNameIsNotValid", func(t *testing.T) {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ext"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com",
				Ports: []corev1.ServicePort{{Name: "tcp", Port: 42, Protocol: corev1.ProtocolTCP}}}}
		if _, err := ekc.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		se := &mcsv1b1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ext"}}
		if _, err := emc.MulticlusterV1beta1().ServiceExports("default").Create(ctx, se, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitCondition(t, emc, "default", "ext", "Valid", metav1.ConditionFalse, string(mcsv1b1.ServiceExportReasonInvalidServiceType))
		// Refused before publishing: the hub never has it, so no agent
		// imports it.
		waitCondition(t, emc, "default", "ext", ConditionSynced, metav1.ConditionFalse, ReasonInvalid)
		if p := findImport(ea.a.State(), "default/ext"); p != nil {
			t.Fatalf("import %+v of an ExternalName service", p)
		}
		if _, err := emc.MulticlusterV1beta1().ServiceImports("default").Get(ctx, "ext", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("ServiceImport of an ExternalName service: %v", err)
		}
	})

	t.Run("UnexportDeletesSlices", func(t *testing.T) {
		for _, c := range []mcsclient.Interface{emc, wmc} {
			if err := c.MulticlusterV1beta1().ServiceExports("default").Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := testenv.WaitFor(ctx, 30*time.Second, func(ctx context.Context) error {
			list, err := wkc.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: mcsv1b1.LabelServiceName + "=db"})
			if err != nil {
				return err
			}
			if len(list.Items) != 0 {
				return fmt.Errorf("%d MCS slices left", len(list.Items))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
}
