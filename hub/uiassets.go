package hub

import (
	"fmt"
	"net/http"
)

// uiAssets serves the UI's pages. Until package hub/ui (the embedded
// assets) is merged, a page that says so and lists the JSON API.
func uiAssets() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ui/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = fmt.Fprint(w, `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>meshfed hub</title></head>
<body><main><h1>meshfed hub</h1>
<p>This build serves the web UI's API only:
<a href="api/topology">topology</a>, <a href="api/services">services</a>,
<a href="api/trust">trust</a>, <a href="api/hub">hub</a>, <a href="api/timeline">timeline</a>,
and the event stream at <a href="api/events">api/events</a>.</p>
</main></body></html>
`)
	})
}
