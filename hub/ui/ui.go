// Package ui provides the hub's web UI: the static files of a read-only
// single-page application (topology, services, trust and hub views) that the
// hub serves at /ui/, and the http.Handler that serves them.
//
// The files under assets/ are embedded in the binary (go:embed), so `meshfed
// hub` needs nothing else at run time and the browser loads nothing from
// elsewhere: no CDN, no font or script from another origin. The handler's
// Content-Security-Policy allows only 'self'.
//
// # Why there is no build step
//
// The assets are the source: plain ES modules, one CSS file and SVG drawn
// by the modules, which every browser the UI targets runs as they are.
// What we would gain from a framework and a bundler (components, JSX,
// minification) is small for four read-only views over a few JSON
// documents, and what it would cost is large: a node_modules tree of
// hundreds of packages to audit and keep up to date, generated files to
// commit or a Node toolchain that every build of the hub needs, and a
// second language toolchain between the source and what the hub serves.
// Without a build step, what is committed is byte for byte what the
// browser runs, `go build` is the whole build, and a review reads the
// code that ships. The npm packages this repository uses (playwright-core
// and axe-core, installed by `make ui-tools`) are test tools only.
//
// The views read the JSON API under /ui/api/ and its event stream
// /ui/api/events, which package hub serves; authentication wraps this
// handler in the hub, not here. See docs/ui.md.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed assets
var embedded embed.FS

// Prefix is the path the hub serves the UI at; Handler serves the assets
// under it.
const Prefix = "/ui/"

// ContentSecurityPolicy is the policy every response of Handler carries:
// scripts, styles, images and connections from the hub's own origin only,
// no inline script or style, no plugins, no framing, no <base>, and forms
// (there are none) only to the hub.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

// contentTypes maps the extensions of the assets to their content type; a
// fixed table rather than the system's mime.types, so the types do not
// depend on the machine the hub runs on (browsers refuse a module served as
// anything but JavaScript).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".json": "application/json",
}

// Assets returns the UI's files, rooted at the directory holding
// index.html.
func Assets() fs.FS {
	sub, err := fs.Sub(embedded, "assets")
	if err != nil {
		panic(err) // "assets" is a valid path: cannot happen
	}
	return sub
}

type asset struct {
	body        []byte
	contentType string
	etag        string
}

// handler serves a fixed set of files, loaded once.
type handler struct {
	files map[string]asset // by path below Prefix ("index.html", "js/app.js")
}

// Handler returns the handler of the UI's static files. Mount it at Prefix:
//
//	mux.Handle(ui.Prefix, ui.Handler())
//
// It answers GET and HEAD of Prefix (index.html) and of each asset below
// it (a request whose path lacks the prefix is taken as already stripped,
// so http.StripPrefix works too), 404 for any other path and 405 for other
// methods. Every response carries ContentSecurityPolicy,
// X-Content-Type-Options: nosniff, Referrer-Policy: no-referrer and
// X-Frame-Options: DENY; files carry a strong ETag and Cache-Control:
// no-cache, so browsers revalidate with a cheap 304 and never run stale
// modules after the hub is upgraded.
func Handler() http.Handler {
	h := &handler{files: map[string]asset{}}
	err := fs.WalkDir(Assets(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			return nil // not served: only the types above are
		}
		b, err := fs.ReadFile(Assets(), p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		h.files[p] = asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		panic(err) // reading the embedded files: cannot fail
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", ContentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Frame-Options", "DENY")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		p = strings.TrimPrefix(r.URL.Path, "/")
	}
	if p == "" {
		p = "index.html"
	}
	a, found := h.files[p]
	if !found {
		http.NotFound(w, r)
		return
	}
	hdr.Set("Content-Type", a.contentType)
	hdr.Set("ETag", a.etag)
	hdr.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
