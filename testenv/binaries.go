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
