package demo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"html"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"path"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

//go:embed static
var staticFS embed.FS

// Config configures the demo. Zero fields take the documented defaults.
type Config struct {
	// Broker is the node's broker (required): the demo registers its
	// service handler on it and publishes through it.
	Broker *broker.Broker
	// Path is the Bayeux endpoint path the pages connect to (default
	// /cometd).
	Path string
	// NodeID names this node on the cluster page (default: the host name).
	NodeID string
	// Tag is the node's tag in a cluster (the prefix of the clientIds it
	// creates), shown on the cluster page; empty on a single node.
	Tag string
	// Registry keeps the rooms' members. Default: in Redis when Engine has
	// a Redis client (cluster mode: pkg/cluster's engine), else in memory.
	Registry Registry
	// Engine is the broker's engine. The node's stats go straight to it,
	// so that the broker's publish counters (Stats, Prometheus) count the
	// clients' traffic and not the demo's own reports (nil: through
	// Broker.Publish). An engine with a Client() *redis.Client method
	// gives the default Registry.
	Engine engine.Engine
	// Logger (default: slog.Default()).
	Logger *slog.Logger
	// StatsInterval is how often the node publishes its stats on
	// /cluster/nodes (default 1s).
	StatsInterval time.Duration
	// MemberTTL is how long a member stays without a refresh (default
	// 30s; the pages refresh every 10s).
	MemberTTL time.Duration
	// ExpireInterval is how often the node removes expired members
	// (default 2s).
	ExpireInterval time.Duration
}

// App is the demo: an http.Handler serving the pages, and the server side
// of the chat (member lists) and of the cluster page (node stats).
type App struct {
	cfg     Config
	b       *broker.Broker
	reg     Registry
	log     *slog.Logger
	members *members
	files   map[string]file
	started time.Time
}

type file struct {
	body  []byte
	ctype string
	etag  string
}

// New creates the demo and registers its service handler on cfg.Broker.
// Serve it at "/" (it answers only its own paths, 404 otherwise) and start
// Run.
func New(cfg Config) (*App, error) {
	if cfg.Broker == nil {
		return nil, errors.New("demo: no broker")
	}
	if cfg.Path == "" {
		cfg.Path = "/cometd"
	}
	if cfg.NodeID == "" {
		cfg.NodeID, _ = os.Hostname()
		if cfg.NodeID == "" {
			cfg.NodeID = "node"
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = time.Second
	}
	if cfg.MemberTTL <= 0 {
		cfg.MemberTTL = 30 * time.Second
	}
	if cfg.ExpireInterval <= 0 {
		cfg.ExpireInterval = 2 * time.Second
	}
	if cfg.Registry == nil {
		if rc, ok := cfg.Engine.(interface{ Client() redis.UniversalClient }); ok && rc.Client() != nil {
			cfg.Registry = NewRedisRegistry(rc.Client())
		} else {
			cfg.Registry = NewMemoryRegistry()
		}
	}
	a := &App{cfg: cfg, b: cfg.Broker, reg: cfg.Registry, log: cfg.Logger, started: time.Now()}
	a.members = &members{a: a, byID: map[string]*tracked{}}
	if err := a.loadFiles(); err != nil {
		return nil, err
	}
	if err := a.b.HandleService(MembersService, a.members.handle); err != nil {
		return nil, err
	}
	return a, nil
}

// pages are served at these paths; everything else under static/ at
// /static/<name>.
var pages = map[string]string{"/": "static/index.html", "/cluster": "static/cluster.html"}

func (a *App) loadFiles() error {
	a.files = map[string]file{}
	return fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		if path.Ext(p) == ".html" {
			// The pages learn the endpoint path from a meta tag.
			body = bytes.ReplaceAll(body, []byte("{{BAYEUX_PATH}}"), []byte(html.EscapeString(a.cfg.Path)))
		}
		ctype := mime.TypeByExtension(path.Ext(p))
		switch path.Ext(p) { // not left to the system's MIME tables
		case ".js", ".mjs":
			ctype = "text/javascript; charset=utf-8"
		case ".css":
			ctype = "text/css; charset=utf-8"
		case ".html":
			ctype = "text/html; charset=utf-8"
		}
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		sum := sha256.Sum256(body)
		f := file{body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		a.files["/"+strings.TrimPrefix(p, "static/")] = f
		return nil
	})
}

// contentSecurityPolicy lets the pages load only their own scripts and
// styles and talk only to their own origin (JSONP is a same-origin
// script; 'self' covers ws: and wss: to the same host). The CometD client
// runs its timers in a worker it creates from a blob: URL.
const contentSecurityPolicy = "default-src 'self'; img-src 'self' data:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// ServeHTTP serves GET and HEAD of the chat page (/), the cluster page
// (/cluster) and their scripts and styles (/static/...); any other path
// is 404.
func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var f file
	var ok bool
	if p, isPage := pages[r.URL.Path]; isPage {
		f, ok = a.files["/"+strings.TrimPrefix(p, "static/")]
	} else if name, isStatic := strings.CutPrefix(r.URL.Path, "/static/"); isStatic && !strings.HasSuffix(name, ".html") {
		f, ok = a.files["/"+name]
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", f.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if strings.HasPrefix(f.ctype, "text/html") {
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Frame-Options", "DENY")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}

// Run publishes this node's stats every StatsInterval and sweeps ended and
// expired members until ctx is done.
func (a *App) Run(ctx context.Context) {
	t := time.NewTicker(min(a.cfg.StatsInterval, time.Second))
	defer t.Stop()
	st := newStatsPublisher(a)
	next := time.Now()
	for {
		now := time.Now()
		if !now.Before(next) {
			st.publish(ctx, now)
			next = now.Add(a.cfg.StatsInterval)
		}
		a.members.sweep(ctx, now)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// broadcast publishes a member list change on /members/<room>.
func (a *App) broadcast(ctx context.Context, ev membersEvent) {
	if _, err := a.b.Publish(ctx, MembersPrefix+ev.Room, mustJSON(ev)); err != nil {
		a.log.Warn("demo: member list broadcast failed", "room", ev.Room, "err", err)
	}
}

// announceRemoved broadcasts the expiry of each removed member.
func (a *App) announceRemoved(ctx context.Context, s Snapshot, removed []Member) {
	for _, m := range removed {
		a.broadcast(ctx, membersEvent{Event: "expire", Room: s.Room, Version: s.Version, Members: public(s.Members), Member: &publicMember{ID: m.ID, Name: m.Name}})
	}
}
