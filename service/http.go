package service

import (
	"context"
	"net/http"
	"time"
)

// readyTimeout bounds one readiness check, so a black-holed broker cannot
// hang the probe past the platform's probe timeout.
const readyTimeout = 2 * time.Second

// Handler serves the group's health for probes:
//
//	GET /readyz  200 "ready", or 503 with one line per component that is not
//	             ready and why (the broker or database unreachable, joining,
//	             shutting down)
//	GET /livez   200 "live" until Run ended, then 503
//
// Reasons never include credentials: components report errors without
// connection strings.
func (g *Group) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		write(w, g.Ready(ctx), "ready")
	})
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		write(w, g.Live(), "live")
	})
	return mux
}

func write(w http.ResponseWriter, err error, ok string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(err.Error() + "\n"))
		return
	}
	_, _ = w.Write([]byte(ok + "\n"))
}
