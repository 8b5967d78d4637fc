package hub

import (
	"encoding/json"
	"net/http"
)

// The web UI (/ui/ on the HTTP port): the assets of package hub/ui, a
// read-only JSON API under /ui/api/ and its event stream (uiapi.go,
// uistream.go), behind a login (uiauth.go) unless Config.UIAnonymous.
// Only GET (and HEAD) is served: nothing under /ui/ changes anything.

// mountUI adds the web UI's routes to the HTTP mux.
func (s *Server) mountUI(mux *http.ServeMux) {
	mux.HandleFunc("GET /ui/login", s.uiLogin)
	mux.Handle("GET /ui/api/", s.uiRequireAuth(true, s.uiAPI()))
	mux.Handle("GET /ui/", s.uiRequireAuth(false, uiAssets()))
	mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
}

// uiError is the API's error body.
type uiError struct {
	Error string `json:"error"`
}

// uiWriteError answers an API request with code and {"error": err}.
func uiWriteError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(uiError{Error: err.Error()})
}
