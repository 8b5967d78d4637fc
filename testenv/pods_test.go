package testenv

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// requirePodBinaries fails a test that needs a cluster with Pods when
// kube-controller-manager, kube-scheduler or kwok is not built, saying how
// to build them. `make test` builds them first.
func requirePodBinaries(t testing.TB) {
	t.Helper()
	requireBinaries(t)
	if _, err := FindPodBinaries(); err != nil {
		t.Fatal(err)
	}
}

// A cluster with Pods behaves as a real one for workloads: a Deployment
// makes pods, the pods run and become Ready with IPs on the cluster's pod
// network, the Service's EndpointSlices list them and follow a scale-down,
// and a deleted namespace goes away.
func TestPodsDeploymentsRunAndEndpointSlicesFollow(t *testing.T) {
	requirePodBinaries(t)
	fed := Start(t, Options{Clusters: []Cluster{
		{Name: "plain", Region: "r", Zone: "z"},
		{Name: "pods", Region: "r", Zone: "z", Pods: true},
	}})
	if ps := fed.Cluster("plain").ControlPlane().Processes(); len(ps) != 2 {
		t.Fatalf("a cluster without Pods runs %d processes, want etcd and kube-apiserver", len(ps))
	}
	c := fed.Cluster("pods")
	cs := c.Clientset()
	ctx := context.Background()
	const ns = "shop"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "cart"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "cart"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(3)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "cart", Image: "example.invalid/cart:1"}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "cart"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
		}},
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	podNet := netip.MustParsePrefix(PodCIDR(1)) // "pods" is the second cluster
	readyPodIPs := func(ctx context.Context, want int) (map[string]bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=cart"})
		if err != nil {
			return nil, err
		}
		ips := map[string]bool{}
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			if p.Spec.NodeName != KwokNodeName || p.Status.Phase != corev1.PodRunning || !podReady(&p) {
				return nil, fmt.Errorf("pod %s: node %q phase %s, not Running and Ready on %s", p.Name, p.Spec.NodeName, p.Status.Phase, KwokNodeName)
			}
			ip, err := netip.ParseAddr(p.Status.PodIP)
			if err != nil || !podNet.Contains(ip) {
				return nil, fmt.Errorf("pod %s: IP %q, want one in %s", p.Name, p.Status.PodIP, podNet)
			}
			ips[p.Status.PodIP] = true
		}
		if len(ips) != want {
			return nil, fmt.Errorf("%d Running and Ready pods with distinct IPs, want %d", len(ips), want)
		}
		return ips, nil
	}
	sliceIPs := func(ctx context.Context) (map[string]bool, error) {
		slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=cart"})
		if err != nil {
			return nil, err
		}
		ips := map[string]bool{}
		for _, s := range slices.Items {
			if s.Labels[discoveryv1.LabelManagedBy] != "endpointslice-controller.k8s.io" {
				return nil, fmt.Errorf("slice %s managed by %q", s.Name, s.Labels[discoveryv1.LabelManagedBy])
			}
			for _, p := range s.Ports {
				if p.Port == nil || *p.Port != 8080 {
					return nil, fmt.Errorf("slice %s port %v, want 8080", s.Name, p.Port)
				}
			}
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					ips[e.Addresses[0]] = true
				}
			}
		}
		return ips, nil
	}
	followed := func(want int) {
		t.Helper()
		err := WaitFor(ctx, time.Minute, func(ctx context.Context) error {
			pods, err := readyPodIPs(ctx, want)
			if err != nil {
				return err
			}
			got, err := sliceIPs(ctx)
			if err != nil {
				return err
			}
			if fmt.Sprint(got) != fmt.Sprint(pods) {
				return fmt.Errorf("EndpointSlices list ready %v, pods are %v", got, pods)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	followed(3)

	// The deployment controller writes the Deployment too: a conflict is
	// retried on a fresh read, as every client of the API does.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		scale, err := cs.AppsV1().Deployments(ns).GetScale(ctx, "cart", metav1.GetOptions{})
		if err != nil {
			return err
		}
		scale.Spec.Replicas = 1
		_, err = cs.AppsV1().Deployments(ns).UpdateScale(ctx, "cart", scale, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	followed(1)

	if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = WaitFor(ctx, time.Minute, func(ctx context.Context) error {
		_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("namespace %s still exists", ns)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
