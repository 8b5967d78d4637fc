package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/meshfed/meshfed/agent"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
	"github.com/meshfed/meshfed/testenv"
	"github.com/meshfed/meshfed/trust"
)

// importWrites records every write to the objects an agent owns for its
// imports (ServiceImports, derived Services, EndpointSlices: those labelled
// app.kubernetes.io/managed-by=meshfed-agent), from a watch started at
// the current resource version, as agent/leader_e2e_test.go does.
type importWrites struct {
	mu     sync.Mutex
	events []importWrite
}

type importWrite struct {
	typ     watch.EventType
	kind    string
	service string // the imported service's name
	object  string // namespace/name
}

func (w importWrite) String() string {
	return fmt.Sprintf("%s %s %s", w.typ, w.kind, w.object)
}

func watchImports(t testing.TB, c *testenv.ClusterEnv) *importWrites {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	mc, err := mcsclient.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	kc := c.Clientset()
	sel := metav1.ListOptions{LabelSelector: agent.LabelManagedBy + "=" + agent.ManagedByValue}
	from := func(rv string) metav1.ListOptions { o := sel; o.ResourceVersion = rv; return o }
	w := &importWrites{}
	watchers := map[string]func() (watch.Interface, error){
		"ServiceImport": func() (watch.Interface, error) {
			l, err := mc.MulticlusterV1beta1().ServiceImports("").List(ctx, sel)
			if err != nil {
				return nil, err
			}
			return mc.MulticlusterV1beta1().ServiceImports("").Watch(ctx, from(l.ResourceVersion))
		},
		"Service": func() (watch.Interface, error) {
			l, err := kc.CoreV1().Services("").List(ctx, sel)
			if err != nil {
				return nil, err
			}
			return kc.CoreV1().Services("").Watch(ctx, from(l.ResourceVersion))
		},
		"EndpointSlice": func() (watch.Interface, error) {
			l, err := kc.DiscoveryV1().EndpointSlices("").List(ctx, sel)
			if err != nil {
				return nil, err
			}
			return kc.DiscoveryV1().EndpointSlices("").Watch(ctx, from(l.ResourceVersion))
		},
	}
	for kind, start := range watchers {
		wi, err := start()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer wi.Stop()
			for ev := range wi.ResultChan() {
				m, ok := ev.Object.(metav1.Object)
				if !ok {
					continue // a watch error: the test sees its effect as missing events
				}
				svc := m.GetName()
				switch kind {
				case "Service":
					svc = strings.TrimPrefix(svc, "meshfed-") // the derived Service
				case "EndpointSlice":
					svc = m.GetLabels()["multicluster.kubernetes.io/service-name"]
				}
				w.mu.Lock()
				w.events = append(w.events, importWrite{typ: ev.Type, kind: kind, service: svc, object: m.GetNamespace() + "/" + m.GetName()})
				w.mu.Unlock()
			}
		}()
	}
	return w
}

// of returns the writes to the objects of the import of name.
func (w *importWrites) of(name string) []importWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(w.events), func(e importWrite) bool { return e.service != name })
}

// configObserver follows a cluster's gateway config stream as one more
// gateway replica would, and keeps every message with when it came.
type configObserver struct {
	mu   sync.Mutex
	msgs []observedConfig
}

type observedConfig struct {
	at time.Time
	m  *gatewayv1.StreamResponse
}

// observeGatewayConfig opens the agent's gateway config stream (the
// meshfed.gateway.v1.Config API) with the cluster's gateway SVID, as
// replica "e2e-observer".
func observeGatewayConfig(t testing.TB, c *testenv.ClusterEnv) *configObserver {
	t.Helper()
	svid, bundle := gatewayIdentity(t, c)
	bundles := trust.NewBundleSet()
	if err := bundles.Set(bundle); err != nil {
		t.Fatal(err)
	}
	tc := trust.ClientTLS(staticSVID{svid}, bundles, trust.AuthorizeID(trust.AgentID(bundle.TrustDomain())))
	conn, err := grpc.NewClient(c.Agent().GatewayAPIAddr(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); _ = conn.Close() })
	st, err := gatewayv1.NewConfigClient(conn).Stream(ctx, &gatewayv1.StreamRequest{Instance: "e2e-observer"})
	if err != nil {
		t.Fatal(err)
	}
	o := &configObserver{}
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				return
			}
			o.mu.Lock()
			o.msgs = append(o.msgs, observedConfig{at: time.Now(), m: m})
			o.mu.Unlock()
		}
	}()
	return o
}

func (o *configObserver) all() []observedConfig {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.msgs)
}

// onlyHubState reports whether m changes nothing but the hub state the
// gateways are told (connected, cached, the hub's revision).
func onlyHubState(m *gatewayv1.StreamResponse) bool {
	return !m.GetSnapshot() && m.GetSelf() == nil &&
		len(m.GetImports())+len(m.GetRemovedImports())+len(m.GetLocalServices())+len(m.GetRemovedLocalServices())+
			len(m.GetClusters())+len(m.GetRemovedClusters())+len(m.GetPolicies())+len(m.GetRemovedPolicies())+
			len(m.GetBundles())+len(m.GetRemovedBundles()) == 0
}
