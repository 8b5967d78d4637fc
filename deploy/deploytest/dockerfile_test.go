package deploytest

import (
	"bufio"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int    // of its first line
	cmd  string // upper case: FROM, RUN, ...
	args string
}

// stage is a FROM and the instructions up to the next one.
type stage struct {
	base, name string
	body       []instruction
}

// parseDockerfile splits a Dockerfile into stages. It handles what
// deploy/Dockerfile uses: comments, parser directives, and lines continued
// with a backslash.
func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var (
		ins     []instruction
		pending strings.Builder
		start   int
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if pending.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if pending.Len() > 0 && strings.HasPrefix(line, "#") {
			continue // a comment inside a continued instruction
		}
		if pending.Len() == 0 {
			start = n
		}
		if s, ok := strings.CutSuffix(line, `\`); ok {
			pending.WriteString(s + " ")
			continue
		}
		pending.WriteString(line)
		cmd, args, _ := strings.Cut(pending.String(), " ")
		ins = append(ins, instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		pending.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var stages []stage
	for _, in := range ins {
		if in.cmd == "FROM" {
			var s stage
			fields := strings.Fields(in.args)
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") { // --platform=...
				fields = fields[1:]
			}
			if len(fields) == 0 {
				t.Fatalf("%s:%d: FROM without an image", path, in.line)
			}
			s.base = fields[0]
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				s.name = fields[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("%s:%d: %s before the first FROM", path, in.line, in.cmd)
			}
			continue
		}
		stages[len(stages)-1].body = append(stages[len(stages)-1].body, in)
	}
	return stages
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.body {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// ImageUID is the user the image runs as, and so the user every manifest
// in deploy/ must run its containers as.
const imageUID = 65532

// TestDockerfileBuildsAStaticBinaryOnANonRootImageWithoutAShell checks
// deploy/Dockerfile: a build stage that compiles ./cmd/meshfed with cgo
// off (a static binary) and the Go of go.mod, stamping variables that
// exist in package main; a final stage on scratch or distroless "static"
// (with CA certificates) that runs no command (it has no shell), copies
// only the binary, runs as a numeric non-root user and starts the binary
// in exec form.
func TestDockerfileBuildsAStaticBinaryOnANonRootImageWithoutAShell(t *testing.T) {
	path := filepath.Join(repoRoot, "deploy", "Dockerfile")
	stages := parseDockerfile(t, path)
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a final one (multi-stage)", len(stages))
	}
	final := stages[len(stages)-1]
	var build *stage
	for i := range stages[:len(stages)-1] {
		for _, r := range stages[i].all("RUN") {
			if strings.Contains(r.args, "go build") {
				build = &stages[i]
			}
		}
	}
	if build == nil || build.name == "" {
		t.Fatal("no named build stage runs go build")
	}

	// The build: static, reproducible, the Go version of go.mod.
	var goBuild string
	for _, r := range build.all("RUN") {
		if strings.Contains(r.args, "go build") {
			goBuild = r.args
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/meshfed"} {
		if !slices.Contains(strings.Fields(goBuild), want) {
			t.Errorf("go build %q: lacks %s", goBuild, want)
		}
	}
	out := regexp.MustCompile(`-o\s+(\S+)`).FindStringSubmatch(goBuild)
	if out == nil {
		t.Fatalf("go build %q: no -o", goBuild)
	}
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod) // go 1.26.0 → 1.26
	if goLine == nil {
		t.Fatal("go.mod has no go directive")
	}
	wantGo := string(goLine[1])
	if img, tag, _ := strings.Cut(build.base, ":"); img != "golang" || (tag != wantGo && !strings.HasPrefix(tag, wantGo+".") && !strings.HasPrefix(tag, wantGo+"-")) {
		t.Errorf("build stage FROM %s: want golang:%s (go.mod's go directive)", build.base, wantGo)
	}
	mainVars := packageVars(t, filepath.Join(repoRoot, "cmd", "meshfed"))
	for _, m := range regexp.MustCompile(`-X\s+main\.(\w+)=`).FindAllStringSubmatch(goBuild, -1) {
		if !mainVars[m[1]] {
			t.Errorf("-ldflags -X main.%s: cmd/meshfed has no package-level string variable %s; the stamp would be lost", m[1], m[1])
		}
	}

	// The final stage: minimal, no shell, non-root.
	distroless := strings.HasPrefix(final.base, "gcr.io/distroless/static")
	if final.base != "scratch" && !distroless {
		t.Errorf("final stage FROM %s: want scratch or gcr.io/distroless/static (no shell, no package manager)", final.base)
	}
	if r := final.all("RUN"); len(r) > 0 {
		t.Errorf("final stage RUN at line %d: a minimal image has no shell to run it", r[0].line)
	}
	var binary string
	var caCerts bool
	for _, c := range final.all("COPY") {
		f := strings.Fields(c.args)
		if len(f) != 3 || f[0] != "--from="+build.name {
			t.Errorf("final stage COPY %s: want only COPY --from=%s SRC DST", c.args, build.name)
			continue
		}
		switch {
		case f[1] == out[1]:
			binary = f[2]
		case strings.Contains(f[1], "ca-certificates"):
			caCerts = true
		}
	}
	if binary == "" {
		t.Errorf("final stage copies not the built binary %s", out[1])
	}
	if final.base == "scratch" && !caCerts {
		t.Error("FROM scratch without ca-certificates: TLS to anything outside the federation's own CAs would fail")
	}
	users := final.all("USER")
	if len(users) == 0 {
		t.Fatal("final stage has no USER: it would run as root")
	}
	uid, gid, _ := strings.Cut(users[len(users)-1].args, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %s: want a numeric non-root uid (Kubernetes' runAsNonRoot can check only a number)", users[len(users)-1].args)
	} else if n != imageUID {
		t.Errorf("USER %d, the manifests run as %d", n, imageUID)
	}
	if gid != "" && gid == "0" {
		t.Errorf("USER %s: group root", users[len(users)-1].args)
	}
	eps := final.all("ENTRYPOINT")
	if len(eps) != 1 {
		t.Fatalf("final stage: %d ENTRYPOINTs, want 1", len(eps))
	}
	var argv []string
	if err := json.Unmarshal([]byte(eps[0].args), &argv); err != nil {
		t.Fatalf("ENTRYPOINT %s: want exec form (a JSON array); shell form needs /bin/sh", eps[0].args)
	}
	if len(argv) == 0 || argv[0] != binary {
		t.Errorf("ENTRYPOINT %v: want the copied binary %s", argv, binary)
	}
}

// packageVars returns the package-level variables of the Go package in dir
// that a -X link flag can set: declared without a value or with a string
// constant.
func packageVars(t *testing.T, dir string) map[string]bool {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]bool{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.VAR {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if len(vs.Values) == 0 {
						vars[n.Name] = true
					} else if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						vars[n.Name] = true
					}
				}
			}
		}
	}
	return vars
}

// TestDockerignoreKeepsSecretsAndBuildOutputOut: the build context the
// Dockerfile sees (BuildKit reads Dockerfile.dockerignore next to it) has
// no .git, no local dev hub keys (.dev) and no tool binaries.
func TestDockerignoreKeepsSecretsAndBuildOutputOut(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	for _, want := range []string{".git", ".dev", ".bin", "bin"} {
		if !slices.Contains(patterns, want) {
			t.Errorf("Dockerfile.dockerignore %v: lacks %s", patterns, want)
		}
	}
}
