package orders

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
)

// PlaceRequest is the body of POST /orders.
type PlaceRequest struct {
	Table  string `json:"table"`
	Dishes []Dish `json:"dishes"`
}

// Handler returns the service's HTTP API:
//
//	POST /orders                  {"table": "7", "dishes": [{"name": "Ramen", "quantity": 2}]} -> 201 order
//	GET  /orders                  every order
//	GET  /orders/{id}             the order with its dishes, or 404
//	POST /orders/{id}/pay         placed -> paid, or 409
//	POST /orders/{id}/complete    paid -> completed, or 409
//	POST /orders/{id}/cancel      placed or paid -> cancelled, or 409
//
// Errors are JSON objects {"error": "..."}.
func Handler(s *Service, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.Default()
	}
	h := &api{s: s, log: logger}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", h.place)
	mux.HandleFunc("GET /orders", h.list)
	mux.HandleFunc("GET /orders/{id}", h.get)
	mux.HandleFunc("POST /orders/{id}/pay", h.transition(s.Pay))
	mux.HandleFunc("POST /orders/{id}/complete", h.transition(s.Complete))
	mux.HandleFunc("POST /orders/{id}/cancel", h.transition(s.Cancel))
	return mux
}

type api struct {
	s   *Service
	log *slog.Logger
}

func (a *api) place(w http.ResponseWriter, r *http.Request) {
	var req PlaceRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad JSON: " + err.Error()})
		return
	}
	o, err := a.s.Place(r.Context(), req.Table, req.Dishes)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/orders/"+o.ID)
	writeJSON(w, http.StatusCreated, o)
}

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	list, err := a.s.List(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	o, err := a.s.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, o)
}

func (a *api) transition(move func(context.Context, string) (Order, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		o, err := move(r.Context(), r.PathValue("id"))
		if err != nil {
			a.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, o)
	}
}

func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrTransition):
		code = http.StatusConflict
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	default:
		a.log.ErrorContext(r.Context(), "orders API", slog.String("path", r.URL.Path), slog.String("error", err.Error()))
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
