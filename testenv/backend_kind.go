package testenv

import (
	"errors"
	"fmt"
	"time"

	"github.com/meshfed/meshfed/testenv/kind"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// kindWait bounds how long kind waits for a cluster's control plane.
const kindWait = 5 * time.Minute

// startKind creates a kind cluster per cluster, one after the other (kind
// creates clusters serially anyway), from configs shaped like
// deploy/kind/*.yaml. On error the clusters created so far are deleted.
func startKind(specs []Cluster, dir, image string) ([]*ClusterEnv, error) {
	var ks []kind.Spec
	for _, c := range specs {
		ks = append(ks, kind.Spec{Name: c.Name, Region: c.Region, Zones: []string{c.Zone}})
	}
	cfgs, err := kind.Configs(ks)
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	var envs []*ClusterEnv
	cleanup := func() error {
		var errs []error
		for _, e := range envs {
			errs = append(errs, e.closeKind())
		}
		return errors.Join(errs...)
	}
	for i, cfg := range cfgs {
		kc, err := kind.Create(cfg, dir, image, kindWait)
		if err != nil {
			return nil, errors.Join(err, cleanup())
		}
		env := &ClusterEnv{spec: specs[i], closeKind: kc.Delete, kubeconfig: kc.Kubeconfig}
		envs = append(envs, env)
		env.config, err = clientcmd.BuildConfigFromFlags("", kc.Kubeconfig)
		if err == nil {
			env.clientset, err = kubernetes.NewForConfig(env.config)
		}
		if err != nil {
			return nil, errors.Join(fmt.Errorf("testenv: kind cluster %s: %w", cfg.Name, err), cleanup())
		}
	}
	return envs, nil
}
