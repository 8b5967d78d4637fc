package kind

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/kind/pkg/cluster/nodes"
	"sigs.k8s.io/kind/pkg/cluster/nodeutils"
)

// Dockerfile is the meshfed image's Dockerfile, relative to the repository
// root, which is the build context.
const Dockerfile = "deploy/Dockerfile"

// BuildArgs are the arguments of `docker build` for the meshfed image tagged
// tag, from the repository at root.
func BuildArgs(root, tag string) []string {
	return []string{"build",
		"-f", filepath.Join(root, Dockerfile),
		"-t", tag,
		"--build-arg", "VERSION=testenv",
		root,
	}
}

// BuildImage builds the meshfed image from the repository at root with
// `docker build` (BuildKit: the Dockerfile uses cache mounts) and tags it
// tag. The build's output goes to logPath; on failure the error quotes its
// tail.
func BuildImage(ctx context.Context, root, tag, logPath string) error {
	if _, err := os.Stat(filepath.Join(root, Dockerfile)); err != nil {
		return fmt.Errorf("kind: image: repository root %s: %w", root, err)
	}
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer func() { _ = log.Close() }()
	cmd := exec.CommandContext(ctx, "docker", BuildArgs(root, tag)...)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=1")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kind: docker %s: %w (log %s): %s", strings.Join(BuildArgs(root, tag), " "), err, logPath, tail(logPath, 2000))
	}
	return nil
}

// SaveImage writes image into the archive path, as `docker save` does, and
// returns the image's ID.
func SaveImage(ctx context.Context, image, path string) (id string, err error) {
	out, err := docker(ctx, "image", "inspect", "-f", "{{ .Id }}", image)
	if err != nil {
		return "", err
	}
	id = strings.TrimSpace(string(out))
	if id == "" || strings.ContainsAny(id, "\n ") {
		return "", fmt.Errorf("kind: docker image inspect %s: ID %q: want one line", image, id)
	}
	if _, err := docker(ctx, "save", "-o", path, image); err != nil {
		return "", err
	}
	return id, nil
}

func docker(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("kind: docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// LoadPlan returns the nodes that need image (with ID id) loaded: those on
// which the container runtime does not report that ID for that name. This
// is the check `kind load docker-image` makes.
func LoadPlan(ns []nodes.Node, image, id string) []nodes.Node {
	var need []nodes.Node
	for _, n := range ns {
		if got, err := nodeutils.ImageID(n, image); err != nil || got != id {
			need = append(need, n)
		}
	}
	return need
}

// LoadImage loads the image archive (from [SaveImage]) into every node of
// ns that lacks image with ID id, as `kind load docker-image` does, and
// returns the names of the nodes it loaded.
func LoadImage(ns []nodes.Node, archive, image, id string) ([]string, error) {
	var loaded []string
	for _, n := range LoadPlan(ns, image, id) {
		if err := loadArchive(n, archive); err != nil {
			return loaded, fmt.Errorf("kind: load %s into node %s: %w", image, n, err)
		}
		loaded = append(loaded, n.String())
	}
	return loaded, nil
}

func loadArchive(n nodes.Node, archive string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	return nodeutils.LoadImageArchive(n, f)
}

// tail returns the last n bytes of the file at path, or why it cannot.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := max(st.Size()-n, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return err.Error()
	}
	return strings.TrimSpace(string(buf))
}
