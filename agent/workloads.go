package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
)

// The cluster's workloads, by pod IP, for the gateways: a connection to an
// egress port comes from one of these addresses, and the gateway names the
// workload's service account (as a SPIFFE ID) to the receiving gateway,
// whose policy may authorize by it. The kubernetes source watches Pods
// (every replica, read-only: a standby's gateways need it too); the file
// source's catalog lists them (`workloads:`). Pods on the host network
// share the node's address and are left out: the address does not name
// them.

// workloadTable holds the workloads by address. It is safe for concurrent
// use; snapshot returns a map the caller may keep.
type workloadTable struct {
	mu    sync.Mutex
	byIP  map[string]*gatewayv1.Workload
	owner map[string]types.UID   // the pod holding each address (kubernetes source)
	ofPod map[types.UID][]string // the addresses each pod holds
	cut   bool                   // over gatewayv1.MaxWorkloads: logged once
	kick  func()
	log   *slog.Logger
}

func newWorkloadTable(kick func(), log *slog.Logger) *workloadTable {
	return &workloadTable{byIP: map[string]*gatewayv1.Workload{}, owner: map[string]types.UID{}, ofPod: map[types.UID][]string{}, kick: kick, log: log}
}

// snapshot returns a copy of the workloads by address.
func (t *workloadTable) snapshot() map[string]*gatewayv1.Workload {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]*gatewayv1.Workload, len(t.byIP))
	for k, v := range t.byIP {
		out[k] = v
	}
	return out
}

// replace sets the whole table (the file source), if it changed.
func (t *workloadTable) replace(ws map[string]*gatewayv1.Workload) {
	t.mu.Lock()
	same := len(ws) == len(t.byIP)
	for k, w := range ws {
		if old, ok := t.byIP[k]; !ok || !sameMessage(old, w) {
			same = false
			break
		}
	}
	if !same {
		t.byIP = ws
	}
	t.mu.Unlock()
	if !same {
		t.kick()
	}
}

// setPod records a pod's addresses (none: the pod is gone or has no IP).
func (t *workloadTable) setPod(uid types.UID, ws []*gatewayv1.Workload) {
	t.mu.Lock()
	changed := false
	for _, ip := range t.ofPod[uid] {
		// Another pod may hold the address now (reuse after a delete
		// that arrived late): only remove it while it is still this one's.
		if t.owner[ip] == uid && !slices.ContainsFunc(ws, func(w *gatewayv1.Workload) bool { return w.GetAddress() == ip }) {
			delete(t.byIP, ip)
			delete(t.owner, ip)
			changed = true
		}
	}
	var ips []string
	for _, w := range ws {
		if _, have := t.byIP[w.GetAddress()]; !have && len(t.byIP) >= gatewayv1.MaxWorkloads {
			if !t.cut {
				t.cut = true
				t.log.Warn("more pods than the gateways take; the rest are unknown to policies by service account", "max", gatewayv1.MaxWorkloads)
			}
			continue
		}
		if old, ok := t.byIP[w.GetAddress()]; !ok || !sameMessage(old, w) {
			t.byIP[w.GetAddress()] = w
			changed = true
		}
		t.owner[w.GetAddress()] = uid
		ips = append(ips, w.GetAddress())
	}
	if len(ips) == 0 {
		delete(t.ofPod, uid)
	} else {
		t.ofPod[uid] = ips
	}
	t.mu.Unlock()
	if changed {
		t.kick()
	}
}

// podWorkloads are the workloads of a pod: one per pod IP, none for a pod
// on the host network, without an IP, or finished.
func podWorkloads(p *corev1.Pod) []*gatewayv1.Workload {
	if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil {
		return nil
	}
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	var out []*gatewayv1.Workload
	ips := p.Status.PodIPs
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = []corev1.PodIP{{IP: p.Status.PodIP}}
	}
	for _, ip := range ips {
		a, err := netip.ParseAddr(ip.IP)
		if err != nil {
			continue
		}
		w := &gatewayv1.Workload{Address: a.Unmap().String(), Namespace: p.Namespace, ServiceAccount: sa}
		if gatewayv1.ValidateWorkload("pod", w) == nil {
			out = append(out, w)
		}
	}
	return out
}

// trimPod keeps what podWorkloads reads, so the informer's cache holds
// little per pod.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone: handled by the delete handler
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			DeletionTimestamp: p.DeletionTimestamp},
		Spec:   corev1.PodSpec{ServiceAccountName: p.Spec.ServiceAccountName, HostNetwork: p.Spec.HostNetwork},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}, nil
}

// watchPodWorkloads keeps t in step with the cluster's pods until ctx is
// done.
func watchPodWorkloads(ctx context.Context, cs kubernetes.Interface, t *workloadTable) error {
	f := informers.NewSharedInformerFactory(cs, 0)
	inf := f.Core().V1().Pods().Informer()
	if err := inf.SetTransform(trimPod); err != nil {
		return fmt.Errorf("agent: pod informer: %w", err)
	}
	set := func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok {
			t.setPod(p.UID, podWorkloads(p))
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, obj any) { set(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				t.setPod(p.UID, nil)
			}
		},
	}); err != nil {
		return fmt.Errorf("agent: pod informer: %w", err)
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	<-ctx.Done()
	return nil
}
