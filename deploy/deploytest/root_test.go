package deploytest

import "path/filepath"

// repoRoot is the repository's root, absolute (kustomize wants absolute
// paths for overlays written elsewhere).
var repoRoot = func() string {
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return abs
}()
