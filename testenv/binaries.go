package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// The versions of the control-plane binaries testenv runs. They must match
// tools/testenv/go.mod, from which scripts/testenv-bins.sh builds them (a
// test checks).
const (
	KubernetesVersion = "v1.36.3"
	EtcdVersion       = "v3.6.8"
	// KwokVersion is sigs.k8s.io/kwok as tools/kwok/go.mod pins it;
	// scripts/kwok-bin.sh builds it.
	KwokVersion = "v0.8.0"
)

// ErrNoBinaries is returned (wrapped) by [Binaries] when kube-apiserver or etcd
// is missing.
var ErrNoBinaries = errors.New("testenv: control-plane binaries not found")

// BinDir is the versioned cache folder that `make testenv-bins` fills:
// <cache root>/k8s-<KubernetesVersion>-etcd-<EtcdVersion>. The cache root is
// $MESHFED_TESTENV_CACHE, else $XDG_CACHE_HOME/meshfed/testenv, else
// ~/.cache/meshfed/testenv.
func BinDir() (string, error) {
	root, err := cacheRoot()
	if err != nil {
		return "", fmt.Errorf("testenv: cache folder: %w", err)
	}
	return filepath.Join(root, "k8s-"+KubernetesVersion+"-etcd-"+EtcdVersion), nil
}

// Binaries returns the paths of the kube-apiserver and etcd binaries to run:
// $MESHFED_KUBE_APISERVER and $MESHFED_ETCD when set, otherwise the ones in
// [BinDir]. A missing binary is an error wrapping [ErrNoBinaries] that says
// how to build it.
func Binaries() (apiserver, etcd string, err error) {
	dir, err := BinDir()
	if err != nil {
		return "", "", err
	}
	apiserver, err = binary(EnvKubeAPIServer, filepath.Join(dir, "kube-apiserver"))
	if err != nil {
		return "", "", err
	}
	etcd, err = binary(EnvEtcd, filepath.Join(dir, "etcd"))
	if err != nil {
		return "", "", err
	}
	return apiserver, etcd, nil
}

// PodBinaries are what a cluster with [Cluster.Pods] runs besides etcd and
// kube-apiserver.
type PodBinaries struct {
	ControllerManager string // kube-controller-manager
	Scheduler         string // kube-scheduler
	Kwok              string // kwok, the node and pod lifecycle simulator
	// KwokConfig is kwok's stock "fast" stages (node-initialize,
	// node-heartbeat-with-lease, pod-ready, pod-complete, pod-delete),
	// written by scripts/kwok-bin.sh from the kwok module.
	KwokConfig string
}

// KwokDir is the cache folder that `make testenv-pod-bins` fills with kwok
// and its configuration: <cache root>/kwok-<KwokVersion>.
func KwokDir() (string, error) {
	root, err := cacheRoot()
	if err != nil {
		return "", fmt.Errorf("testenv: cache folder: %w", err)
	}
	return filepath.Join(root, "kwok-"+KwokVersion), nil
}

// FindPodBinaries returns the binaries of [PodBinaries]: each from its
// environment variable ($MESHFED_KUBE_CONTROLLER_MANAGER,
// $MESHFED_KUBE_SCHEDULER, $MESHFED_KWOK) when set, otherwise from [BinDir]
// and [KwokDir]. A missing one is an error wrapping [ErrNoBinaries] that
// says how to build it (`make testenv-pod-bins`).
func FindPodBinaries() (PodBinaries, error) {
	dir, err := BinDir()
	if err != nil {
		return PodBinaries{}, err
	}
	kdir, err := KwokDir()
	if err != nil {
		return PodBinaries{}, err
	}
	var b PodBinaries
	for _, x := range []struct {
		dst         *string
		env, cached string
	}{
		{&b.ControllerManager, EnvKubeControllerManager, filepath.Join(dir, "kube-controller-manager")},
		{&b.Scheduler, EnvKubeScheduler, filepath.Join(dir, "kube-scheduler")},
		{&b.Kwok, EnvKwok, filepath.Join(kdir, "kwok")},
	} {
		if *x.dst, err = podBinary(x.env, x.cached); err != nil {
			return PodBinaries{}, err
		}
	}
	b.KwokConfig = filepath.Join(kdir, "kwok.yaml")
	if fi, err := os.Stat(b.KwokConfig); err != nil || fi.Size() == 0 {
		return PodBinaries{}, fmt.Errorf("%w: %s: missing or empty; write it with `make testenv-pod-bins`", ErrNoBinaries, b.KwokConfig)
	}
	return b, nil
}

func podBinary(env, cached string) (string, error) {
	if p := os.Getenv(env); p != "" {
		if err := executable(p); err != nil {
			return "", fmt.Errorf("%w: $%s=%s: %v", ErrNoBinaries, env, p, err)
		}
		return p, nil
	}
	if err := executable(cached); err != nil {
		return "", fmt.Errorf("%w: %s: %v; build it with `make testenv-pod-bins` "+
			"(about 5 minutes once kube-apiserver is built, cached afterwards) or point $%s at an existing binary",
			ErrNoBinaries, cached, err, env)
	}
	return cached, nil
}

func binary(env, cached string) (string, error) {
	if p := os.Getenv(env); p != "" {
		if err := executable(p); err != nil {
			return "", fmt.Errorf("%w: $%s=%s: %v", ErrNoBinaries, env, p, err)
		}
		return p, nil
	}
	if err := executable(cached); err != nil {
		return "", fmt.Errorf("%w: %s: %v; build it with `make testenv-bins` "+
			"(about 9 minutes once, cached afterwards) or point $%s at an existing binary",
			ErrNoBinaries, cached, err, env)
	}
	return cached, nil
}

func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("not an executable file")
	}
	return nil
}
