package kitchen

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"time"
)

//go:embed web
var web embed.FS

// Handler returns the kitchen display's HTTP interface:
//
//	GET  /                                 the live display page
//	GET  /events                           server-sent events: "snapshot" (every order) on connect, then "order" per change
//	GET  /api/orders                       every order, JSON
//	GET  /api/orders/{id}                  one order
//	POST /api/orders/{id}/dishes/{n}/serve mark dish n (0-based) served
func (k *Kitchen) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(web, "web")
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /events", k.events)
	mux.HandleFunc("GET /api/orders", func(w http.ResponseWriter, r *http.Request) {
		list, err := k.store.List(r.Context())
		if err != nil {
			httpError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, list)
	})
	mux.HandleFunc("GET /api/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		o, err := k.store.Get(r.Context(), r.PathValue("id"))
		if err != nil {
			httpError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, o)
	})
	mux.HandleFunc("POST /api/orders/{id}/dishes/{n}/serve", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.PathValue("n"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "dish number: " + err.Error()})
			return
		}
		o, err := k.Serve(r.Context(), r.PathValue("id"), n)
		if err != nil {
			httpError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, o)
	})
	return mux
}

// events streams display updates as server-sent events.
func (k *Kitchen) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	// Subscribe before the snapshot, so no change falls between the two.
	ch := k.hub.subscribe()
	defer k.hub.unsubscribe(ch)
	list, err := k.store.List(r.Context())
	if err != nil {
		httpError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	snap, _ := json.Marshal(list)
	fmt.Fprintf(w, "retry: 1000\nevent: snapshot\ndata: %s\n\n", snap)
	flusher.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-ping.C:
			fmt.Fprint(w, ": ping\n\n")
		case b, ok := <-ch:
			if !ok {
				return // fell behind: the page reconnects and gets a snapshot
			}
			fmt.Fprintf(w, "event: order\ndata: %s\n\n", b)
		}
		flusher.Flush()
	}
}

func httpError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	if errors.Is(err, ErrNotFound) {
		code = http.StatusNotFound
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
