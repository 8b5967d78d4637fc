package ui_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/meshfed/meshfed/hub/ui"
)

func get(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestHandlerServesIndexAtThePrefix(t *testing.T) {
	h := ui.Handler()
	for _, target := range []string{"/ui/", "/ui/index.html"} {
		resp := get(t, h, http.MethodGet, target, nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", target, resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("GET %s: Content-Type %q", target, ct)
		}
		if !strings.Contains(string(body), `<script type="module" src="js/app.js">`) {
			t.Errorf("GET %s: not the index page:\n%s", target, body)
		}
	}
	// Mounted behind http.StripPrefix, the same.
	resp := get(t, http.StripPrefix("/ui", h), http.MethodGet, "/ui/js/app.js", nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("through StripPrefix: %d", resp.StatusCode)
	}
}

func TestHandlerServesEveryAssetWithItsTypeAndPolicy(t *testing.T) {
	h := ui.Handler()
	want := map[string]string{".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	n := 0
	err := fs.WalkDir(ui.Assets(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		resp := get(t, h, http.MethodGet, ui.Prefix+p, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", p, resp.StatusCode)
			return nil
		}
		if ct, ok := want[path.Ext(p)]; !ok {
			t.Errorf("%s: an asset of a type the handler does not serve", p)
		} else if got := resp.Header.Get("Content-Type"); got != ct {
			t.Errorf("GET %s: Content-Type %q, want %q", p, got, ct)
		}
		for k, v := range map[string]string{
			"Content-Security-Policy": ui.ContentSecurityPolicy, "X-Content-Type-Options": "nosniff",
			"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache",
		} {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("GET %s: %s: %q, want %q", p, k, got, v)
			}
		}
		if resp.Header.Get("ETag") == "" {
			t.Errorf("GET %s: no ETag", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 8 {
		t.Errorf("only %d assets", n)
	}
}

func TestContentSecurityPolicyAllowsOnlySelf(t *testing.T) {
	for _, dir := range strings.Split(ui.ContentSecurityPolicy, ";") {
		f := strings.Fields(dir)
		if len(f) < 2 {
			t.Errorf("directive %q has no source", dir)
			continue
		}
		for _, src := range f[1:] {
			if src != "'self'" && src != "'none'" {
				t.Errorf("directive %s allows %s: only 'self' (or 'none')", f[0], src)
			}
		}
	}
	if !strings.Contains(ui.ContentSecurityPolicy, "default-src 'self'") {
		t.Errorf("no default-src 'self': %s", ui.ContentSecurityPolicy)
	}
}

func TestHandlerRefusesOtherPathsAndMethods(t *testing.T) {
	h := ui.Handler()
	for _, target := range []string{"/ui/nope.js", "/ui/js/", "/ui/../ui.go", "/ui/assets/index.html", "/ui/js/app.js.map"} {
		if resp := get(t, h, http.MethodGet, target, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", target, resp.StatusCode)
		}
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		resp := get(t, h, m, "/ui/", nil)
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /ui/: %d, Allow %q; want 405, GET, HEAD", m, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	if resp := get(t, h, http.MethodHead, "/ui/style.css", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD: %d", resp.StatusCode)
	}
}

func TestHandlerAnswersARevalidationWith304(t *testing.T) {
	h := ui.Handler()
	etag := get(t, h, http.MethodGet, "/ui/js/app.js", nil).Header.Get("ETag")
	if resp := get(t, h, http.MethodGet, "/ui/js/app.js", map[string]string{"If-None-Match": etag}); resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match %s: %d, want 304", etag, resp.StatusCode)
	}
	if resp := get(t, h, http.MethodGet, "/ui/js/app.js", map[string]string{"If-None-Match": `"other"`}); resp.StatusCode != http.StatusOK {
		t.Errorf("If-None-Match of another version: %d, want 200", resp.StatusCode)
	}
}

var (
	reImport  = regexp.MustCompile(`(?m)^\s*import\s+(?:[^'"]*?\s+from\s+)?['"]([^'"]+)['"]`)
	reRef     = regexp.MustCompile(`\b(?:src|href)="([^"#]+)"`)
	reRemote  = regexp.MustCompile(`(?i)(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	reInline  = regexp.MustCompile(`(?i)<script(?:\s+type="module")?\s*>|<style|\sstyle=|\son[a-z]+=`)
	reUnsafeJ = regexp.MustCompile(`\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\(|setAttribute\('style'`)
)

// TestAssetsLoadOnlyThemselves checks what the Content-Security-Policy
// relies on and what the browser would otherwise fetch from elsewhere: every
// import and every src/href of the assets names another asset, no URL
// points off the hub, there is no inline script, style or event handler,
// and no script builds HTML from strings.
func TestAssetsLoadOnlyThemselves(t *testing.T) {
	assets := ui.Assets()
	err := fs.WalkDir(assets, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(assets, p)
		if err != nil {
			return err
		}
		src := string(b)
		var refs []string
		switch path.Ext(p) {
		case ".js":
			for _, m := range reImport.FindAllStringSubmatch(src, -1) {
				refs = append(refs, m[1])
			}
			if m := reUnsafeJ.FindString(src); m != "" {
				t.Errorf("%s: uses %s: build nodes with h() and text nodes", p, m)
			}
		case ".html":
			for _, m := range reRef.FindAllStringSubmatch(src, -1) {
				refs = append(refs, m[1])
			}
			if m := reInline.FindString(src); m != "" {
				t.Errorf("%s: inline %q: the CSP refuses it", p, m)
			}
		}
		for _, r := range refs {
			if strings.HasPrefix(r, "api/") {
				continue // the hub's API, preloaded by index.html
			}
			target := path.Join(path.Dir(p), r)
			if _, err := fs.Stat(assets, target); err != nil {
				t.Errorf("%s: refers to %s, which is not an asset", p, r)
			}
		}
		for _, m := range reRemote.FindAllString(src, -1) {
			if !strings.HasSuffix(m, "//www.w3.org") { // the SVG namespace's name, not fetched
				t.Errorf("%s: names %s: everything must come from the hub", p, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
