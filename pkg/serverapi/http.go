package serverapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// HandlerConfig configures the API's HTTP handler.
type HandlerConfig struct {
	Service *Service
	// Keys authorizes calls; nil refuses every call with a message saying
	// how to configure a key file.
	Keys     *Keys
	Registry prometheus.Registerer // per-call metrics; nil: not exported
	Logger   *slog.Logger
	// MaxBodyBytes bounds a request body (default 64 KiB); larger gets 413.
	MaxBodyBytes int64
	// Rate and Burst bound the calls per second of the whole listener
	// (default 1000, and a burst of twice the rate); over it a call gets
	// 429 with Retry-After. A broadcast counts as one call.
	Rate  float64
	Burst int
	// Bayeux, if set, is the node's Bayeux endpoint, also served at
	// BayeuxPath on the API listener for the admin console.
	Bayeux     http.Handler
	BayeuxPath string
	// ClientJS is the browser Bayeux client the console loads
	// (/admin/bayeux.js).
	ClientJS []byte
}

// Handler serves the server API (HTTP JSON and gRPC) and the admin console.
type Handler struct {
	cfg     HandlerConfig
	svc     *Service
	keys    *Keys
	log     *slog.Logger
	met     *metrics
	limiter *rate.Limiter
	mux     *http.ServeMux
	grpc    http.Handler
}

// NewHandler builds the handler.
func NewHandler(cfg HandlerConfig) *Handler {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 64 << 10
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 1000
	}
	if cfg.Burst <= 0 {
		cfg.Burst = max(1, int(2*cfg.Rate))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Handler{cfg: cfg, svc: cfg.Service, keys: cfg.Keys, log: cfg.Logger, met: newMetrics(cfg.Registry),
		limiter: rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst), mux: http.NewServeMux()}
	for _, rt := range h.routes() {
		h.route(rt.method+" "+rt.path, rt.call, rt.f)
	}
	h.mux.HandleFunc("GET /api/v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(OpenAPI())
	})
	h.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, &Error{Code: CodeMethodNotFound, Message: "no API call " + r.Method + " " + r.URL.Path + " (see /api/v1/openapi.json)"})
	})
	h.mux.Handle("/admin/", adminHandler(cfg.ClientJS, cfg.BayeuxPath))
	h.mux.Handle("GET /{$}", http.RedirectHandler("/admin/", http.StatusFound))
	if cfg.Bayeux != nil && cfg.BayeuxPath != "" {
		h.mux.Handle(cfg.BayeuxPath, cfg.Bayeux)
		h.mux.Handle(cfg.BayeuxPath+"/", cfg.Bayeux)
	}
	h.grpc = newGRPCServer(h)
	return h
}

// ServeHTTP dispatches gRPC (HTTP/2 with content-type application/grpc)
// to the gRPC service and everything else to the HTTP routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		h.grpc.ServeHTTP(w, r)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// apiRoute is one call of the HTTP API.
type apiRoute struct {
	method, path, call string
	f                  apiFunc
}

// routes is every call of the HTTP API (the OpenAPI document must describe
// exactly these, plus itself).
func (h *Handler) routes() []apiRoute {
	return []apiRoute{
		{"POST", "/api/v1/publish", "publish", h.publish},
		{"POST", "/api/v1/broadcast", "broadcast", h.broadcast},
		{"GET", "/api/v1/channels", "channels", h.channels},
		{"GET", "/api/v1/presence", "presence", h.presence},
		{"GET", "/api/v1/history", "history", h.history},
		{"POST", "/api/v1/disconnect", "disconnect", h.disconnect},
		{"POST", "/api/v1/unsubscribe", "unsubscribe", h.unsubscribe},
		{"GET", "/api/v1/nodes", "nodes", h.nodes},
	}
}

// apiFunc serves one call: it returns the response body or an error.
type apiFunc func(ctx context.Context, r *http.Request) (any, error)

// route registers an authorized, rate-limited, measured call.
func (h *Handler) route(pattern, call string, f apiFunc) {
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if e, status := h.admit(r.Header.Get("Authorization"), r.Header.Get("X-API-Key")); e != nil {
			if status == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", "1")
			} else {
				w.Header().Set("WWW-Authenticate", `Bearer realm="bayeux"`)
			}
			writeError(w, status, e)
			h.met.observe(call, "http", e.Code, start)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes)
		out, err := f(r.Context(), r)
		if err != nil {
			status, e := httpError(err)
			writeError(w, status, e)
			h.met.observe(call, "http", e.Code, start)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
		h.met.observe(call, "http", "ok", start)
	})
}

// admit checks the key (from "Bearer KEY" or the X-API-Key value) and the
// rate; it returns the refusal and its HTTP status, or nil.
func (h *Handler) admit(authorization, apiKey string) (*Error, int) {
	if h.keys == nil {
		return &Error{Code: CodeNotConfigured, Message: "the server API has no keys: start the node with --api-key-file PATH " +
			"(or BAYEUX_API_KEY_FILE), a file with one key of at least 16 characters per line"}, http.StatusUnauthorized
	}
	key := apiKey
	if v, ok := strings.CutPrefix(authorization, "Bearer "); ok {
		key = strings.TrimSpace(v)
	}
	if key == "" {
		return &Error{Code: CodeUnauthorized, Message: "missing API key: send Authorization: Bearer KEY or X-API-Key: KEY"}, http.StatusUnauthorized
	}
	if !h.keys.Check(key) {
		return &Error{Code: CodeUnauthorized, Message: "wrong API key"}, http.StatusUnauthorized
	}
	if !h.limiter.Allow() {
		return &Error{Code: CodeRateLimited, Message: fmt.Sprintf("over %g API calls per second", h.cfg.Rate)}, http.StatusTooManyRequests
	}
	return nil, 0
}

func writeError(w http.ResponseWriter, status int, e *Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Error: e})
}

// errNotFound: the call named a session nobody holds.
var errNotFound = errors.New("not found")

// httpError maps an error of the Service to a status and body.
func httpError(err error) (int, *Error) {
	e := errorOf(err)
	switch e.Code {
	case CodeBadRequest:
		return http.StatusBadRequest, e
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge, e
	case CodeNotFound:
		return http.StatusNotFound, e
	default:
		return http.StatusServiceUnavailable, e
	}
}

// errorOf classifies err.
func errorOf(err error) *Error {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return &Error{Code: CodeTooLarge, Message: fmt.Sprintf("request body over %d bytes", mbe.Limit)}
	case errors.Is(err, ErrInvalid):
		return &Error{Code: CodeBadRequest, Message: err.Error()}
	case errors.Is(err, errNotFound):
		return &Error{Code: CodeNotFound, Message: err.Error()}
	default:
		return &Error{Code: CodeUnavailable, Message: err.Error()}
	}
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return fmt.Errorf("%w: body: %v", ErrInvalid, err)
	}
	return nil
}

func (h *Handler) publish(ctx context.Context, r *http.Request) (any, error) {
	var req PublishRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return h.svc.Publish(ctx, req.Channel, req.Data)
}

func (h *Handler) broadcast(ctx context.Context, r *http.Request) (any, error) {
	var req BroadcastRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return h.svc.Broadcast(ctx, req.Channels, req.Data)
}

func (h *Handler) channels(ctx context.Context, r *http.Request) (any, error) {
	return h.svc.Channels(ctx, r.URL.Query().Get("pattern"))
}

func (h *Handler) presence(ctx context.Context, r *http.Request) (any, error) {
	ch := r.URL.Query().Get("channel")
	if ch == "" {
		return nil, fmt.Errorf("%w: channel is required", ErrInvalid)
	}
	return h.svc.Presence(ctx, ch)
}

func (h *Handler) history(ctx context.Context, r *http.Request) (any, error) {
	q := r.URL.Query()
	since, limit := int64(-1), 100
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: since must be a replay id (a number >= 0)", ErrInvalid)
		}
		since = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("%w: limit must be a number", ErrInvalid)
		}
		limit = n
	}
	return h.svc.History(ctx, q.Get("channel"), since, limit)
}

func (h *Handler) disconnect(ctx context.Context, r *http.Request) (any, error) {
	var req DisconnectRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return h.svc.Disconnect(ctx, req)
}

func (h *Handler) unsubscribe(ctx context.Context, r *http.Request) (any, error) {
	var req UnsubscribeRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return h.svc.Unsubscribe(ctx, req)
}

func (h *Handler) nodes(ctx context.Context, _ *http.Request) (any, error) {
	return h.svc.Nodes(ctx)
}
