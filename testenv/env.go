package testenv

import (
	"os"
	"path/filepath"
)

// The environment variables testenv reads. They are read here and nowhere
// else.
const (
	// EnvKubeAPIServer names an existing kube-apiserver binary to use instead
	// of the one in the cache folder.
	EnvKubeAPIServer = "MESHFED_KUBE_APISERVER"
	// EnvEtcd names an existing etcd binary to use instead of the one in the
	// cache folder.
	EnvEtcd = "MESHFED_ETCD"
	// EnvKubeControllerManager, EnvKubeScheduler and EnvKwok name existing
	// binaries to use instead of the ones in the cache folders, for
	// clusters with [Cluster.Pods].
	EnvKubeControllerManager = "MESHFED_KUBE_CONTROLLER_MANAGER"
	EnvKubeScheduler         = "MESHFED_KUBE_SCHEDULER"
	EnvKwok                  = "MESHFED_KWOK"
	// EnvCache is the root of the binary cache (default
	// $XDG_CACHE_HOME/meshfed/testenv, or ~/.cache/meshfed/testenv).
	EnvCache = "MESHFED_TESTENV_CACHE"
	// EnvMeshfed names an existing meshfed binary; without it testenv builds
	// github.com/meshfed/meshfed/cmd/meshfed once per test binary.
	EnvMeshfed = "MESHFED_BINARY"
	// EnvBackend selects how clusters are made: "process" (the default: etcd
	// and kube-apiserver processes) or "kind" (kind clusters in Docker).
	EnvBackend = "MESHFED_TESTENV_BACKEND"
)

// cacheRoot is the root of the binary cache, the same rule as
// scripts/testenv-bins.sh.
func cacheRoot() (string, error) {
	if d := os.Getenv(EnvCache); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "meshfed", "testenv"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".cache", "meshfed", "testenv"), nil
}
