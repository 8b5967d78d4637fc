package pkgdoc

import (
	"errors"
	"go/build"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryPackageHasDocComment fails for each package in the module whose
// non-test files carry no package doc comment, or whose doc comment does not
// start the conventional way: "Package <name> ..." (for commands, any text).
func TestEveryPackageHasDocComment(t *testing.T) {
	root := moduleRoot(t)
	checked := 0
	var missing, malformed []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if path != root && skipDir(path, d.Name()) {
			return filepath.SkipDir
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		doc, name, ok, err := packageDoc(path)
		if err != nil {
			return err
		}
		if !ok {
			return nil // no Go package here
		}
		checked++
		switch {
		case strings.TrimSpace(doc) == "":
			missing = append(missing, rel)
		case name != "main" && !strings.HasPrefix(doc, "Package "+name+" "):
			malformed = append(malformed, rel+` (starts "`+firstLine(doc)+`")`)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	if checked == 0 {
		t.Fatalf("found no Go packages under %s", root)
	}
	t.Logf("checked %d packages under %s", checked, root)
	for _, dir := range missing {
		t.Errorf("%s: package has no doc comment (add a doc.go with \"// Package <name> ...\" above the package clause)", dir)
	}
	for _, dir := range malformed {
		t.Errorf("%s: package doc comment must start with \"Package <name> \"", dir)
	}
}

// moduleRoot returns the nearest directory at or above the working
// directory (this package's directory, under go test) that holds go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod at or above the working directory")
		}
		dir = parent
	}
}

// skipDir reports whether the walk must not descend into dir: what the go
// command ignores in ./... (hidden and _ directories, testdata, nested
// modules), vendored code, and build output (bin).
func skipDir(dir, name string) bool {
	switch {
	case strings.HasPrefix(name, "."), strings.HasPrefix(name, "_"):
		return true // .git, .bin, .dev, .ci, ...
	case name == "testdata", name == "vendor", name == "bin":
		return true
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
		return true // a nested module is not part of ./...
	}
	return false
}

// packageDoc returns the package doc comment and name of the package in dir,
// taken from the non-test files that build for this platform (as the go
// command selects them). ok is false if dir holds no such files.
func packageDoc(dir string) (doc, name string, ok bool, err error) {
	pkg, err := build.ImportDir(dir, 0)
	if err != nil {
		var noGo *build.NoGoError
		if errors.As(err, &noGo) {
			return "", "", false, nil
		}
		return "", "", false, err
	}
	fset := token.NewFileSet()
	for _, f := range pkg.GoFiles {
		// Only the comments above the package clause matter.
		file, err := parser.ParseFile(fset, filepath.Join(dir, f), nil, parser.ParseComments|parser.PackageClauseOnly)
		if err != nil {
			return "", "", false, err
		}
		if file.Doc != nil {
			if text := file.Doc.Text(); strings.TrimSpace(text) != "" {
				return text, pkg.Name, true, nil
			}
		}
	}
	return "", pkg.Name, true, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// TestREADMELayoutNamesEveryPackage fails for each package of the module
// that README.md's "Layout" table does not name as `dir/` (a row may name
// several, comma-separated), so the layout cannot drift from the code.
func TestREADMELayoutNamesEveryPackage(t *testing.T) {
	root := moduleRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "\n## Layout")
	if start < 0 {
		t.Fatal(`README.md has no "## Layout" section`)
	}
	layout := readme[start+1:]
	if end := strings.Index(layout[2:], "\n## "); end >= 0 {
		layout = layout[:end+2]
	}
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() || path == root {
			return nil
		}
		if skipDir(path, d.Name()) {
			return filepath.SkipDir
		}
		_, _, ok, err := packageDoc(path)
		if err != nil || !ok {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		checked++
		if !strings.Contains(layout, "`"+filepath.ToSlash(rel)+"/`") {
			t.Errorf("README.md's Layout does not name `%s/`", filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked == 0 {
		t.Fatal("found no packages")
	}
}
