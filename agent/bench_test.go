package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/meshfed/meshfed/testenv"
)

// BenchmarkPropagation measures, on real kube-apiservers with a real hub,
// the time from creating an exported service in cluster east (Service,
// EndpointSlice, ServiceExport) to its ServiceImport and derived
// EndpointSlice both existing in cluster west, over many services.
func BenchmarkPropagation(b *testing.B) {
	p := startKubePair(b)
	ctx := context.Background()
	emc, wmc, ekc, wkc := p.emc, p.wmc, p.east.Clientset(), p.west.Clientset()

	// Arrival times in west, from watches (no polling error).
	var mu sync.Mutex
	importAt, sliceAt := map[string]time.Time{}, map[string]time.Time{}
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
	record := func(w watch.Interface, at map[string]time.Time) {
		for ev := range w.ResultChan() {
			if ev.Type != watch.Added {
				continue
			}
			m, ok := ev.Object.(metav1.Object)
			if !ok {
				continue
			}
			mu.Lock()
			if _, seen := at[m.GetName()]; !seen {
				at[m.GetName()] = time.Now()
			}
			mu.Unlock()
		}
	}
	go record(siw, importAt)
	go record(esw, sliceAt)

	// Warm-up, not measured: the first watch event of a freshly installed
	// CRD (ServiceExport) reaches the informers up to ~2 s late while the
	// API server's watch cache for it catches up; a cluster's CRDs are not
	// new in production.
	createExport(b, ekc, emc, "default", "warmup", 8080, corev1.ServiceTypeClusterIP, "us-east-1a")
	if err := testenv.WaitFor(ctx, 60*time.Second, func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := importAt["warmup"]; !ok {
			return errors.New("warm-up export not imported yet")
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}

	// One service at a time: each measurement is one export on a quiet
	// federation, from the create calls to both objects existing in west.
	const services = 30
	var lat []time.Duration
	for i := 0; i < services; i++ {
		name := fmt.Sprintf("svc%03d", i)
		t0 := time.Now()
		createExport(b, ekc, emc, "default", name, 8080, corev1.ServiceTypeClusterIP, "us-east-1a")
		if err := testenv.WaitFor(ctx, 60*time.Second, func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			si, ok1 := importAt[name]
			es, ok2 := sliceAt[derivedName(name)]
			if !ok1 || !ok2 {
				return fmt.Errorf("%s not imported yet", name)
			}
			last := si
			if es.After(si) {
				last = es
			}
			lat = append(lat, last.Sub(t0))
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("latencies in creation order: %v", lat)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p50, p99 := lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
	b.ReportMetric(float64(p50.Milliseconds()), "p50-ms")
	b.ReportMetric(float64(p99.Milliseconds()), "p99-ms")
	fmt.Printf("export in east -> ServiceImport + EndpointSlice in west, %d services one at a time: p50 %v  p99 %v\n",
		services, p50.Round(time.Millisecond), p99.Round(time.Millisecond))
}

// BenchmarkHealthToGatewayConfig measures, on real kube-apiservers with a
// real 3-server hub, the time from an endpoint's readiness flipping in an
// EndpointSlice of cluster east to the config stream of west's gateway
// showing the new ready count of the import: east's informer, debounce
// (50 ms) and publish, the hub's commit and Sync fan-out, west's view and
// gateway config, the gateway stream.
func BenchmarkHealthToGatewayConfig(b *testing.B) {
	p := startKubePair(b)
	ctx := context.Background()
	emc, ekc := p.emc, p.east.Clientset()
	gw := startGateway(b, p.wa.a, "west-gw")
	createExport(b, ekc, emc, "default", "reviews", 8080, corev1.ServiceTypeClusterIP, "us-east-1a")
	waitGateway(b, gw, 60*time.Second, importReady("default/reviews", "east", 2))
	changed := gw.c.Watch()

	const changes = 60
	var lat []time.Duration
	slices := ekc.DiscoveryV1().EndpointSlices("default")
	for i := range changes {
		ready := i%2 == 1 // first the second endpoint goes unready, then back
		want := uint32(1)
		if ready {
			want = 2
		}
		es, err := slices.Get(ctx, "reviews-1", metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		es.Endpoints[1].Conditions.Ready = &ready
		t0 := time.Now()
		if _, err := slices.Update(ctx, es, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		deadline := time.After(30 * time.Second)
		for {
			s, _ := gw.c.State()
			if importReady("default/reviews", "east", want)(s) == nil {
				lat = append(lat, time.Since(t0))
				break
			}
			select {
			case <-changed:
			case <-deadline:
				b.Fatalf("change %d: west's gateway config never showed %d ready", i, want)
			}
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p50, p99 := lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	fmt.Printf("endpoint readiness in east -> west gateway config, %d changes one at a time: p50 %v  p99 %v  (of which 50ms is the publish debounce)\n",
		changes, p50.Round(time.Millisecond), p99.Round(time.Millisecond))
}

// kubePair is a 3-server hub and two clusters, east and west, on real
// kube-apiservers, each with an in-process agent (kubernetes source),
// joined and connected.
type kubePair struct {
	fed        *testenv.Federation
	east, west *testenv.ClusterEnv
	emc, wmc   mcsclient.Interface
	ea, wa     *runningAgent
}

func startKubePair(b *testing.B) *kubePair {
	b.Helper()
	fed := testenv.Start(b, testenv.Options{
		HubServers: 3,
		NoAgents:   true, // the agents run in-process
		Clusters: []testenv.Cluster{
			{Name: "east", Region: "us-east", Zone: "us-east-1a"},
			{Name: "west", Region: "us-west", Zone: "us-west-1a"},
		},
	})
	admin := adminClient(b, fed)
	p := &kubePair{fed: fed, east: fed.Cluster("east"), west: fed.Cluster("west")}
	p.emc, p.wmc = installCRDs(b, p.east), installCRDs(b, p.west)
	ecfg, wcfg := kubeConfig(b, p.east, b.TempDir()), kubeConfig(b, p.west, b.TempDir())
	for _, cfg := range []Config{ecfg, wcfg} {
		if err := Join(context.Background(), cfg, createToken(b, admin, cfg.Cluster.String())); err != nil {
			b.Fatal(err)
		}
	}
	p.ea, p.wa = startAgent(b, ecfg), startAgent(b, wcfg)
	waitState(b, p.ea.a, 60*time.Second, connected)
	waitState(b, p.wa.a, 60*time.Second, connected)
	return p
}
