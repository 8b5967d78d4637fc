package kind

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/kind/pkg/cluster/nodes"
)

// containerdConfig is the part of `containerd config dump` (containerd 2,
// config version 3) from which kind reads the snapshotter.
const containerdConfig = `version = 3
[plugins]
  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "overlayfs"
`

// runtimeNode answers like a kind node's container runtime that holds the
// image IDs in have (by image name); crictl fails for any other image.
func runtimeNode(t *testing.T, name string, have map[string]string) *fakeNode {
	return newFakeNode(t, name, func(argv []string) (string, error) {
		switch strings.Join(argv[:2], " ") {
		case "crictl inspecti":
			id, ok := have[argv[2]]
			if !ok {
				return "", errors.New("image not found")
			}
			return `{"status":{"id":"` + id + `","repoTags":["docker.io/library/` + argv[2] + `"]}}`, nil
		case "containerd config":
			return containerdConfig, nil
		case "ctr --namespace=k8s.io":
			return "", nil
		}
		t.Errorf("node %s: unexpected command %q", name, argv)
		return "", errors.New("unexpected command")
	})
}

// TestLoadImageLikeKindLoad: the archive goes, with the command `kind load
// docker-image` uses, into the nodes that lack the image or hold another
// build of it, and not into those that hold this build.
func TestLoadImageLikeKindLoad(t *testing.T) {
	const image, id = "meshfed:testenv", "sha256:1111"
	has := runtimeNode(t, "east-control-plane", map[string]string{image: id})
	stale := runtimeNode(t, "east-worker", map[string]string{image: "sha256:0000"})
	lacks := runtimeNode(t, "east-worker2", nil)
	ns := []nodes.Node{has, stale, lacks}

	var plan []string
	for _, n := range LoadPlan(ns, image, id) {
		plan = append(plan, n.String())
	}
	if want := []string{"east-worker", "east-worker2"}; !reflect.DeepEqual(plan, want) {
		t.Fatalf("plan %v, want %v", plan, want)
	}

	archive := filepath.Join(t.TempDir(), "image.tar")
	if err := os.WriteFile(archive, []byte("the image archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadImage(ns, archive, image, id)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(loaded, plan) {
		t.Errorf("loaded %v, want %v", loaded, plan)
	}
	for _, n := range []*fakeNode{has, stale, lacks} {
		var imports []fakeRun
		for _, r := range n.runs {
			if r.argv[0] == "ctr" {
				imports = append(imports, r)
			}
		}
		if n == has {
			if len(imports) != 0 {
				t.Errorf("%s holds the image but got %v", n, n.commands())
			}
			continue
		}
		want := "ctr --namespace=k8s.io images import --all-platforms --digests --snapshotter=overlayfs -"
		if len(imports) != 1 || strings.Join(imports[0].argv, " ") != want || imports[0].stdin != "the image archive" {
			t.Errorf("%s: imports %+v, want one %q reading the archive", n, imports, want)
		}
	}
}

func TestLoadImageMissingArchive(t *testing.T) {
	n := runtimeNode(t, "east-worker", nil)
	_, err := LoadImage([]nodes.Node{n}, filepath.Join(t.TempDir(), "none.tar"), "meshfed:testenv", "sha256:1")
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "east-worker") {
		t.Errorf("err = %v, want a missing file naming the node", err)
	}
}

func TestBuildArgs(t *testing.T) {
	got := BuildArgs("/src/meshfed", "meshfed:testenv")
	want := []string{"build", "-f", "/src/meshfed/deploy/Dockerfile", "-t", "meshfed:testenv", "--build-arg", "VERSION=testenv", "/src/meshfed"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("docker %v, want docker %v", got, want)
	}
}

func TestCheckRepo(t *testing.T) {
	if err := CheckRepo(filepath.Join("..", "..")); err != nil {
		t.Errorf("this repository: %v", err)
	}
	if err := CheckRepo(t.TempDir()); err == nil {
		t.Error("an empty folder passed")
	}
}
