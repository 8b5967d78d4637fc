package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	mcsv1b1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/gateway/gatewayclient"
	"github.com/meshfed/meshfed/testenv"
)

// installCRDs applies deploy/crds/*.yaml and waits until they serve.
func installCRDs(t testing.TB, c *testenv.ClusterEnv) mcsclient.Interface {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("../deploy/crds/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in deploy/crds: %v", err)
	}
	gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(b, &obj); err != nil {
			t.Fatal(err)
		}
		if _, err := dyn.Resource(gvr).Create(context.Background(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	mc, err := mcsclient.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.WaitFor(context.Background(), 30*time.Second, func(ctx context.Context) error {
		if _, err := mc.MulticlusterV1beta1().ServiceExports("default").List(ctx, metav1.ListOptions{}); err != nil {
			return err
		}
		if _, err := mc.MulticlusterV1beta1().ServiceImports("default").List(ctx, metav1.ListOptions{}); err != nil {
			return err
		}
		_, err := dyn.Resource(clusterPropertyGVR).List(ctx, metav1.ListOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mc
}

func kubeConfig(t testing.TB, c *testenv.ClusterEnv, dir string) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Cluster = federation.MustClusterName(c.Name())
	loc, err := federation.NewLocality(c.Spec().Region, c.Spec().Zone, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Locality = loc
	cfg.DataDir = dir
	cfg.Source = SourceKubernetes
	cfg.KubeConfig = c.RESTConfig()
	cfg.GatewayAddress = "10.99.0.1"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.GatewayAPIAddr = "127.0.0.1:0"
	cfg.ReconnectMin = 20 * time.Millisecond
	cfg.ReconnectMax = 300 * time.Millisecond
	cfg.Log = testLogger(t, c.Name())
	return cfg
}

func createExport(t testing.TB, kc kubernetes.Interface, mc mcsclient.Interface, ns, name string, port int32, svcType corev1.ServiceType, zone string) {
	t.Helper()
	ctx := context.Background()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Type: svcType}}
	if svcType == corev1.ServiceTypeExternalName {
		svc.Spec.ExternalName = "example.com"
	} else {
		svc.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: port, Protocol: corev1.ProtocolTCP}}
	}
	if _, err := kc.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if svcType != corev1.ServiceTypeExternalName {
		// The first endpoint's pod carries a subset label and a per-pod
		// one (which is not an endpoint label).
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-pod-1", Labels: map[string]string{"version": "v1", "pod-template-hash": "abc"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "none"}}}}
		if _, err := kc.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		ready := true
		pn, pp := "http", port
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"10.1.0.1"}, Zone: &zone, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
					TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name + "-pod-1"}},
				{Addresses: []string{"10.1.0.2"}, Zone: &zone, Conditions: discoveryv1.EndpointConditions{Ready: &ready}},
			},
			Ports: []discoveryv1.EndpointPort{{Name: &pn, Port: &pp}},
		}
		if _, err := kc.DiscoveryV1().EndpointSlices(ns).Create(ctx, es, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	se := &mcsv1b1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if _, err := mc.MulticlusterV1beta1().ServiceExports(ns).Create(ctx, se, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// importObjects returns the ServiceImport and derived EndpointSlice of
// ns/name, failing the poll until both exist.
func importObjects(ctx context.Context, kc kubernetes.Interface, mc mcsclient.Interface, ns, name string) (*mcsv1b1.ServiceImport, *discoveryv1.EndpointSlice, error) {
	si, err := mc.MulticlusterV1beta1().ServiceImports(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, err
	}
	es, err := kc.DiscoveryV1().EndpointSlices(ns).Get(ctx, derivedName(name), metav1.GetOptions{})
	if err != nil {
		return nil, nil, err
	}
	return si, es, nil
}

func waitCondition(t testing.TB, mc mcsclient.Interface, ns, name, typ string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	err := testenv.WaitFor(context.Background(), 30*time.Second, func(ctx context.Context) error {
		se, err := mc.MulticlusterV1beta1().ServiceExports(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		c := apimeta.FindStatusCondition(se.Status.Conditions, typ)
		if c == nil || c.Status != status || c.Reason != reason {
			return fmt.Errorf("conditions %+v, want %s=%s (%s)", se.Status.Conditions, typ, status, reason)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestKubeAgentsExportImportStaticStability(t *testing.T) {
	ew := startEastWest(t, 1)
	fed, admin, east, west := ew.fed, ew.admin, ew.east, ew.west
	emc, wmc, ekc, wkc := ew.emc, ew.wmc, ew.ekc, ew.wkc
	ctx := context.Background()

	ecfg, wcfg := kubeConfig(t, east, t.TempDir()), kubeConfig(t, west, t.TempDir())
	wcfg.DNSAddr = "127.0.0.1:0"
	if err := Join(ctx, ecfg, createToken(t, admin, "east")); err != nil {
		t.Fatal(err)
	}
	if _, err := ekc.CoreV1().Secrets(DefaultNamespace).Get(ctx, credentialsSecret, metav1.GetOptions{}); err != nil {
		t.Fatalf("credentials secret: %v", err)
	}
	if err := Join(ctx, wcfg, createToken(t, admin, "west")); err != nil {
		t.Fatal(err)
	}
	ea := startAgent(t, ecfg)
	wa := startAgent(t, wcfg)

	// An orphan from an earlier life is collected at start; a foreign
	// ServiceImport is never touched.
	orphan := &mcsv1b1.ServiceImport{ObjectMeta: ownedMeta("default", "ghost", "ghost"), Spec: mcsv1b1.ServiceImportSpec{Type: mcsv1b1.ClusterSetIP, Ports: []mcsv1b1.ServicePort{{Port: 1}}}}
	if _, err := wmc.MulticlusterV1beta1().ServiceImports("default").Create(ctx, orphan, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	foreign := &mcsv1b1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "theirs"}, Spec: mcsv1b1.ServiceImportSpec{Type: mcsv1b1.ClusterSetIP, Ports: []mcsv1b1.ServicePort{{Port: 1}}}}
	if _, err := wmc.MulticlusterV1beta1().ServiceImports("default").Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	createExport(t, ekc, emc, "default", "reviews", 8080, corev1.ServiceTypeClusterIP, "us-east-1a")
	waitCondition(t, emc, "default", "reviews", "Valid", metav1.ConditionTrue, "Valid")

	var si0 *mcsv1b1.ServiceImport
	var es0 *discoveryv1.EndpointSlice
	if err := testenv.WaitFor(ctx, 30*time.Second, func(ctx context.Context) error {
		si, es, err := importObjects(ctx, wkc, wmc, "default", "reviews")
		if err != nil {
			return err
		}
		if len(si.Status.Clusters) != 1 || si.Status.Clusters[0].Cluster != "east" {
			return fmt.Errorf("clusters %v", si.Status.Clusters)
		}
		if len(es.Endpoints) != 1 || es.Endpoints[0].Addresses[0] != "10.99.0.1" || !*es.Endpoints[0].Conditions.Ready {
			return fmt.Errorf("slice endpoints %+v", es.Endpoints)
		}
		if len(si.Spec.IPs) != 1 {
			return fmt.Errorf("ServiceImport ips %v", si.Spec.IPs)
		}
		si0, es0 = si, es
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if p := *es0.Ports[0].Port; p < int32(wcfg.EgressPortMin) || p > int32(wcfg.EgressPortMax) {
		t.Errorf("egress port %d outside %d-%d", p, wcfg.EgressPortMin, wcfg.EgressPortMax)
	}
	if err := testenv.WaitFor(ctx, 20*time.Second, func(ctx context.Context) error {
		if _, err := wmc.MulticlusterV1beta1().ServiceImports("default").Get(ctx, "ghost", metav1.GetOptions{}); err == nil {
			return errors.New("orphan still there")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := wmc.MulticlusterV1beta1().ServiceImports("default").Get(ctx, "theirs", metav1.GetOptions{}); err != nil {
		t.Fatalf("foreign ServiceImport: %v", err)
	}
	waitCondition(t, emc, "default", "reviews", ConditionSynced, metav1.ConditionTrue, ReasonPublished)

	t.Run("DNSAnswersTheDerivedServicesClusterIP", func(t *testing.T) {
		waitA(t, wa.a.DNSAddr(), "reviews.default.svc.clusterset.local.", netip.MustParseAddr(si0.Spec.IPs[0]), 20*time.Second)
	})

	t.Run("EndpointLabelsFromPods", func(t *testing.T) {
		// Local endpoints (for the gateways) carry their pod's labels,
		// without the per-pod ones; the hub gets them as a group.
		if err := testenv.WaitFor(ctx, 20*time.Second, func(context.Context) error {
			l := ea.a.status().local["default/reviews"]
			if l == nil || len(l.GetEndpoints()) != 2 {
				return fmt.Errorf("local default/reviews = %v", l)
			}
			e0, e1 := l.GetEndpoints()[0], l.GetEndpoints()[1]
			if e0.GetAddress() != "10.1.0.1" || e0.GetLabels()["version"] != "v1" || len(e0.GetLabels()) != 1 || len(e1.GetLabels()) != 0 {
				return fmt.Errorf("endpoints %v, want 10.1.0.1 labelled version=v1 only, 10.1.0.2 unlabelled", l.GetEndpoints())
			}
			if len(e0.GetPorts()) != 1 || e0.GetPorts()[0].GetPort() != 8080 || e0.GetZone() != "us-east-1a" {
				return fmt.Errorf("endpoint ports %v zone %q", e0.GetPorts(), e0.GetZone())
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("InvalidExportCondition", func(t *testing.T) {
		createExport(t, ekc, emc, "default", "external", 0, corev1.ServiceTypeExternalName, "")
		waitCondition(t, emc, "default", "external", "Valid", metav1.ConditionFalse, string(mcsv1b1.ServiceExportReasonInvalidServiceType))
		se := &mcsv1b1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "missing"}}
		if _, err := emc.MulticlusterV1beta1().ServiceExports("default").Create(ctx, se, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitCondition(t, emc, "default", "missing", "Valid", metav1.ConditionFalse, string(mcsv1b1.ServiceExportReasonNoService))
	})

	t.Run("ConflictCondition", func(t *testing.T) {
		// west exports reviews later, on another port: east's is older and
		// wins; both show the conflict (the KEP raises it on every
		// constituent export), and east's clears once west's is gone.
		createExport(t, wkc, wmc, "default", "reviews", 9090, corev1.ServiceTypeClusterIP, "us-west-1a")
		waitCondition(t, wmc, "default", "reviews", "Conflict", metav1.ConditionTrue, string(mcsv1b1.ServiceExportReasonPortConflict))
		waitCondition(t, emc, "default", "reviews", "Conflict", metav1.ConditionTrue, string(mcsv1b1.ServiceExportReasonPortConflict))
		if err := wmc.MulticlusterV1beta1().ServiceExports("default").Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitCondition(t, emc, "default", "reviews", "Conflict", metav1.ConditionFalse, string(mcsv1b1.ServiceExportReasonNoConflicts))
		waitState(t, wa.a, 20*time.Second, func(st State) error {
			p := findImport(st, "default/reviews")
			if p == nil || len(p.Clusters) != 1 {
				return fmt.Errorf("import %+v, want east only", p)
			}
			return nil
		})
	})

	parent := t // agents started in subtests must outlive them
	stable := func(t *testing.T, what string) {
		t.Helper()
		si, es, err := importObjects(ctx, wkc, wmc, "default", "reviews")
		if err != nil {
			t.Fatalf("%s: import gone: %v", what, err)
		}
		if si.UID != si0.UID || es.UID != es0.UID {
			t.Fatalf("%s: import recreated (UID %s→%s, slice %s→%s)", what, si0.UID, si.UID, es0.UID, es.UID)
		}
	}
	t.Run("HubDownKeepsImports", func(t *testing.T) {
		si0, es0, _ = importObjects(ctx, wkc, wmc, "default", "reviews")
		for _, s := range fed.Hub().Servers() {
			if err := s.Kill(); err != nil {
				t.Fatal(err)
			}
		}
		waitState(t, wa.a, 20*time.Second, func(st State) error {
			if st.Hub.Connected {
				return errors.New("still connected")
			}
			return nil
		})
		waitCondition(t, emc, "default", "reviews", ConditionSynced, metav1.ConditionFalse, ReasonHubUnreachable)
		stable(t, "hub down")
		// The hub state is cached in ConfigMaps too (a rescheduled pod
		// loses its data directory).
		if err := testenv.WaitFor(ctx, 20*time.Second, func(ctx context.Context) error {
			cm, err := wkc.CoreV1().ConfigMaps(DefaultNamespace).Get(ctx, HubStateConfigMap, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if cm.Data["revision"] != strconv.FormatUint(wa.a.State().Hub.Revision, 10) {
				return fmt.Errorf("ConfigMap cache at revision %s, agent at %d", cm.Data["revision"], wa.a.State().Hub.Revision)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		// Restart the agent while the hub is down, without its data
		// directory: it serves from the ConfigMap cache.
		wa.stop(t)
		if err := os.Remove(filepath.Join(wcfg.DataDir, hubStateFile)); err != nil {
			t.Fatal(err)
		}
		wa = startAgent(parent, wcfg)
		st := waitState(t, wa.a, 20*time.Second, hasImportFrom("default/reviews", "east"))
		if !st.Hub.FromCache || st.Hub.Connected {
			t.Errorf("hub state %+v, want served from cache", st.Hub)
		}
		// Give the restarted importer a full reconcile pass: still intact.
		if err := testenv.WaitFor(ctx, 10*time.Second, func(ctx context.Context) error {
			m := wa.a.State()
			if m.Hub.Revision == 0 {
				return errors.New("no revision")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		stable(t, "agent restarted while hub down")

		for _, s := range fed.Hub().Servers() {
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
		}
		waitState(t, wa.a, 60*time.Second, connected)
		waitState(t, ea.a, 60*time.Second, connected)
		waitCondition(t, emc, "default", "reviews", ConditionSynced, metav1.ConditionTrue, ReasonPublished)
		stable(t, "hub back")
		si, es, _ := importObjects(ctx, wkc, wmc, "default", "reviews")
		if si.ResourceVersion != si0.ResourceVersion || es.ResourceVersion != es0.ResourceVersion {
			t.Errorf("import rewritten after the hub came back: ServiceImport rv %s→%s, slice rv %s→%s", si0.ResourceVersion, si.ResourceVersion, es0.ResourceVersion, es.ResourceVersion)
		}
	})

	t.Run("DeletionPropagates", func(t *testing.T) {
		if err := emc.MulticlusterV1beta1().ServiceExports("default").Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := testenv.WaitFor(ctx, 30*time.Second, func(ctx context.Context) error {
			if _, _, err := importObjects(ctx, wkc, wmc, "default", "reviews"); err == nil {
				return errors.New("import still there")
			}
			if _, err := wkc.CoreV1().Services("default").Get(ctx, derivedName("reviews"), metav1.GetOptions{}); err == nil {
				return errors.New("derived service still there")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestKubeGatewayAuthenticatesByServiceAccountOnly: in-cluster a gateway
// gets its first SVID with a token of the gateways' ServiceAccount,
// checked by a TokenReview against the real API server; the static
// bootstrap token and another ServiceAccount's token are refused.
func TestKubeGatewayAuthenticatesByServiceAccountOnly(t *testing.T) {
	fed := testenv.Start(t, testenv.Options{HubServers: 1, NoAgents: true,
		Clusters: []testenv.Cluster{{Name: "east", Region: "us-east", Zone: "us-east-1a"}}})
	admin := adminClient(t, fed)
	east := fed.Cluster("east")
	installCRDs(t, east)
	cfg := kubeConfig(t, east, t.TempDir())
	if err := Join(context.Background(), cfg, createToken(t, admin, "east")); err != nil {
		t.Fatal(err)
	}
	ra := startAgent(t, cfg)
	if err := testenv.WaitFor(context.Background(), 20*time.Second, func(context.Context) error {
		if ra.a.GatewayAPIAddr() == "" {
			return errors.New("gateway API not listening")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st, err := openStores(ra.a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := st.gwBoot.Load()
	if err != nil {
		t.Fatal(err)
	}
	try := func(name string, tok func() (string, error)) error {
		c, err := gatewayclient.New(gatewayclient.Config{Agent: ra.a.GatewayAPIAddr(), Bootstrap: boot, Instance: name, ServiceAccountToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		for ctx.Err() == nil {
			if _, err := c.GetX509SVID(); err == nil {
				cancel()
				return <-done // nil: Run returns nil once ctx is done
			}
			select {
			case err := <-done:
				return err // a refusal ends Run
			case <-c.Watch():
			case <-time.After(50 * time.Millisecond): // poll interval of GetX509SVID
			}
		}
		return ctx.Err()
	}
	if err := try("bootstrap", nil); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the bootstrap token in-cluster: %v, want PermissionDenied", err)
	}
	if err := try("other-sa", serviceAccountToken(t, ra.a, "default")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("another ServiceAccount's token: %v, want PermissionDenied", err)
	}
	if err := try("api-audience", serviceAccountTokenFor(t, ra.a, DefaultGatewayServiceAccount, "https://kubernetes.default.svc")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the gateway ServiceAccount's token for the API server's audience: %v, want PermissionDenied", err)
	}
	if err := try("gateway", serviceAccountToken(t, ra.a, DefaultGatewayServiceAccount)); err != nil {
		t.Errorf("the gateway ServiceAccount's token: %v", err)
	}
}
