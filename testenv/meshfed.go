package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

var (
	meshfedOnce sync.Once
	meshfedPath string
	meshfedErr  error
)

// meshfedBinary returns the meshfed binary to run: $MESHFED_BINARY, or
// github.com/meshfed/meshfed/cmd/meshfed built once per test binary with
// `go build` into os.TempDir()/meshfed-testenv-bin-<pid>. Such folders of
// test binaries that have exited are removed at the next build; the folder
// of the running one stays until then.
func meshfedBinary() (string, error) {
	meshfedOnce.Do(func() {
		if p := os.Getenv(EnvMeshfed); p != "" {
			if err := executable(p); err != nil {
				meshfedErr = fmt.Errorf("testenv: $%s=%s: %w", EnvMeshfed, p, err)
				return
			}
			meshfedPath = p
			return
		}
		pruneBinDirs()
		dir := filepath.Join(os.TempDir(), "meshfed-testenv-bin-"+strconv.Itoa(os.Getpid()))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			meshfedErr = err
			return
		}
		out := filepath.Join(dir, "meshfed")
		cmd := exec.Command("go", "build", "-o", out, "github.com/meshfed/meshfed/cmd/meshfed")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			meshfedErr = fmt.Errorf("testenv: go build github.com/meshfed/meshfed/cmd/meshfed: %w: %s "+
				"(outside the meshfed module, set $%s to a meshfed binary)", err, strings.TrimSpace(stderr.String()), EnvMeshfed)
			return
		}
		meshfedPath = out
	})
	return meshfedPath, meshfedErr
}

// pruneBinDirs removes the meshfed build folders of test binaries that are no
// longer running.
func pruneBinDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "meshfed-testenv-bin-*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "meshfed-testenv-bin-"))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(d)
		}
	}
}
