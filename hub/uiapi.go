package hub

import (
	"net/http"
)

// uiAPI serves the JSON API under /ui/api/ (GET only).
func (s *Server) uiAPI() http.Handler {
	mux := http.NewServeMux()
	for _, name := range uiViews {
		mux.HandleFunc("GET /ui/api/"+name, func(w http.ResponseWriter, _ *http.Request) {
			uiWriteJSON(w, s.ui.view(name))
		})
	}
	mux.HandleFunc("GET /ui/api/timeline", func(w http.ResponseWriter, _ *http.Request) {
		b, err := s.ui.timelineJSON()
		if err != nil {
			uiWriteError(w, http.StatusInternalServerError, err)
			return
		}
		uiWriteJSON(w, b)
	})
	mux.HandleFunc("GET /ui/api/events", s.ui.serveEvents)
	mux.HandleFunc("/ui/api/", func(w http.ResponseWriter, r *http.Request) {
		uiWriteError(w, http.StatusNotFound, errUINotFound{r.URL.Path})
	})
	return mux
}

type errUINotFound struct{ path string }

func (e errUINotFound) Error() string { return "no such API endpoint: " + e.path }

func uiWriteJSON(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}
