package agent

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	mcsv1b1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/meshfed/meshfed/testenv"
)

// headlessBenchEndpoints is the size of the headless services
// BenchmarkHeadlessPropagation exports.
const headlessBenchEndpoints = 100

// createBigHeadlessExport creates a headless Service ns/name whose
// EndpointSlice lists n ready pods with hostnames (a StatefulSet's), and
// exports it.
func createBigHeadlessExport(b testing.TB, kc kubernetes.Interface, mc mcsclient.Interface, ns, name string, n int) {
	b.Helper()
	ctx := context.Background()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone,
		Ports: []corev1.ServicePort{{Name: "http", Port: 5432, Protocol: corev1.ProtocolTCP}}}}
	if _, err := kc.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	ready := true
	pn, pp := "http", int32(5432)
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-v4", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &pn, Port: &pp}},
	}
	for i := range n {
		pod := fmt.Sprintf("%s-%d", name, i)
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{fmt.Sprintf("10.%d.%d.%d", 1+i/65536, i/256%256, i%256)}, Hostname: &pod,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod},
		})
	}
	if _, err := kc.DiscoveryV1().EndpointSlices(ns).Create(ctx, es, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	se := &mcsv1b1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if _, err := mc.MulticlusterV1beta1().ServiceExports(ns).Create(ctx, se, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkHeadlessPropagation measures, on real kube-apiservers with a
// real 3-server hub, the time from creating a headless exported service
// with 100 pods in east to west holding its ServiceImport and imported
// EndpointSlices with all 100 endpoints, one service at a time. The
// baseline, in the same run and the same way, is a ClusterSetIP export
// (its ServiceImport and derived EndpointSlice existing in west, as
// BenchmarkPropagation measures): the ratio is what the 100 endpoints with
// hostnames cost.
func BenchmarkHeadlessPropagation(b *testing.B) {
	p := startKubePair(b)
	ctx := context.Background()
	emc, wmc, ekc, wkc := p.emc, p.wmc, p.east.Clientset(), p.west.Clientset()

	// What west holds, from watches (no polling error): when each import
	// appeared, and when its slices first listed the endpoints expected.
	var mu sync.Mutex
	importAt, slicesAt := map[string]time.Time{}, map[string]time.Time{}
	want := map[string]int{}                 // import name -> endpoints expected in west
	endpoints := map[string]map[string]int{} // import name -> slice name -> endpoints
	siw, err := wmc.MulticlusterV1beta1().ServiceImports("default").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer siw.Stop()
	esw, err := wkc.DiscoveryV1().EndpointSlices("default").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer esw.Stop()
	go func() {
		for ev := range siw.ResultChan() {
			if si, ok := ev.Object.(*mcsv1b1.ServiceImport); ok && ev.Type == watch.Added {
				mu.Lock()
				if _, seen := importAt[si.Name]; !seen {
					importAt[si.Name] = time.Now()
				}
				mu.Unlock()
			}
		}
	}()
	go func() {
		for ev := range esw.ResultChan() {
			es, ok := ev.Object.(*discoveryv1.EndpointSlice)
			if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) {
				continue
			}
			name := es.Labels[mcsv1b1.LabelServiceName]
			mu.Lock()
			if endpoints[name] == nil {
				endpoints[name] = map[string]int{}
			}
			endpoints[name][es.Name] = len(es.Endpoints)
			n := 0
			for _, c := range endpoints[name] {
				n += c
			}
			w, tracked := want[name]
			if _, seen := slicesAt[name]; !seen && tracked && n >= w {
				slicesAt[name] = time.Now()
			}
			mu.Unlock()
		}
	}()
	measure := func(name string, n int, create func()) time.Duration {
		mu.Lock()
		want[name] = n
		mu.Unlock()
		t0 := time.Now()
		create()
		var d time.Duration
		if err := testenv.WaitFor(ctx, 60*time.Second, func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			si, ok1 := importAt[name]
			es, ok2 := slicesAt[name]
			if !ok1 || !ok2 {
				return fmt.Errorf("%s not imported with %d endpoints yet", name, n)
			}
			last := si
			if es.After(si) {
				last = es
			}
			d = last.Sub(t0)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		return d
	}
	// Warm-up, not measured (see BenchmarkPropagation).
	measure("warmup", 0, func() {
		createExport(b, ekc, emc, "default", "warmup", 8080, corev1.ServiceTypeClusterIP, "us-east-1a")
	})

	const services = 20
	var headless, clusterSetIP []time.Duration
	for i := range services {
		name := fmt.Sprintf("db%03d", i)
		headless = append(headless, measure(name, headlessBenchEndpoints, func() {
			createBigHeadlessExport(b, ekc, emc, "default", name, headlessBenchEndpoints)
		}))
		name = fmt.Sprintf("web%03d", i)
		clusterSetIP = append(clusterSetIP, measure(name, 0, func() {
			createExport(b, ekc, emc, "default", name, 8080, corev1.ServiceTypeClusterIP, "us-east-1a")
		}))
	}
	pct := func(d []time.Duration) (p50, p99 time.Duration) {
		d = slices.Clone(d)
		slices.Sort(d)
		return d[len(d)/2], d[min(len(d)-1, len(d)*99/100)]
	}
	h50, h99 := pct(headless)
	c50, c99 := pct(clusterSetIP)
	b.ReportMetric(float64(h50.Milliseconds()), "headless-p50-ms")
	b.ReportMetric(float64(h99.Milliseconds()), "headless-p99-ms")
	b.ReportMetric(float64(c50.Milliseconds()), "clustersetip-p50-ms")
	b.ReportMetric(float64(c99.Milliseconds()), "clustersetip-p99-ms")
	fmt.Printf("export in east -> import in west, %d services each, one at a time:\n"+
		"  headless, %d endpoints: p50 %v  p99 %v\n  ClusterSetIP:            p50 %v  p99 %v  (headless/ClusterSetIP p50 %.2fx, p99 %.2fx)\n",
		services, headlessBenchEndpoints, h50.Round(time.Millisecond), h99.Round(time.Millisecond),
		c50.Round(time.Millisecond), c99.Round(time.Millisecond),
		float64(h50)/float64(c50), float64(h99)/float64(c99))
}
