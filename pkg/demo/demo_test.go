package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

type msg = bayeuxtest.Msg

var quiet = slog.New(slog.DiscardHandler)

// server is a broker with the demo mounted as the node mounts it.
type server struct {
	app *App
	b   *broker.Broker
	url string // the Bayeux endpoint
	web string // the demo's origin
}

func newServer(t *testing.T, cfg Config) *server {
	t.Helper()
	b, err := broker.New(broker.Config{Timeout: 300 * time.Millisecond, MaxInterval: 2 * time.Second, SweepInterval: 50 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Broker = b
	if cfg.Engine == nil {
		cfg.Engine = b.Config().Engine // as the node does
	}
	cfg.Path = "/cometd"
	cfg.Logger = quiet
	if cfg.StatsInterval == 0 {
		cfg.StatsInterval = 100 * time.Millisecond
	}
	app, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	brokerDone, appDone := make(chan struct{}), make(chan struct{})
	go func() { _ = b.Run(ctx); close(brokerDone) }()
	go func() { app.Run(ctx); close(appDone) }()
	mux := http.NewServeMux()
	mux.Handle("/cometd", b)
	mux.Handle("/cometd/", b)
	mux.Handle("/", app)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = b.Shutdown(sctx)
		scancel()
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		<-brokerDone
		<-appDone
	})
	return &server{app: app, b: b, url: srv.URL + "/cometd", web: srv.URL}
}

func TestStaticFiles(t *testing.T) {
	b, err := broker.New(broker.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	app, err := New(Config{Broker: b, Path: `/bay"eux`, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(app)
	defer srv.Close()
	get := func(method, path string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/", "text/html; charset=utf-8", `<meta name="bayeux-path" content="/bay&#34;eux">`},
		{"/cluster", "text/html; charset=utf-8", `src="/static/cluster.js"`},
		{"/static/bayeux.js", "text/javascript; charset=utf-8", "export class BayeuxClient"},
		{"/static/client.js", "text/javascript; charset=utf-8", "vendor/cometd/cometd.js"},
		{"/static/chat.js", "text/javascript; charset=utf-8", `"/service/members"`},
		{"/static/cluster.js", "text/javascript; charset=utf-8", `"/cluster/nodes"`},
		{"/static/style.css", "text/css; charset=utf-8", ".messages"},
	} {
		resp, body := get(http.MethodGet, tc.path, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != tc.ctype || !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s: %d %q, body has %q: %v", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.contains, strings.Contains(body, tc.contains))
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", tc.path)
		}
		if strings.HasPrefix(tc.ctype, "text/html") && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET %s: CSP %q", tc.path, resp.Header.Get("Content-Security-Policy"))
		}
		// Revalidation.
		resp, _ = get(http.MethodGet, tc.path, map[string]string{"If-None-Match": resp.Header.Get("ETag")})
		if resp.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: %d", tc.path, resp.StatusCode)
		}
	}
	// The pages use no inline script (the CSP forbids it) and no markup
	// built from strings.
	for _, p := range []string{"/", "/cluster"} {
		_, body := get(http.MethodGet, p, nil)
		if strings.Contains(body, "<script>") || strings.Contains(body, "onclick") {
			t.Errorf("%s has inline script", p)
		}
	}
	for _, f := range []string{"/static/bayeux.js", "/static/client.js", "/static/chat.js", "/static/cluster.js"} {
		_, body := get(http.MethodGet, f, nil)
		if strings.Contains(body, "innerHTML") || strings.Contains(body, "insertAdjacentHTML") || strings.Contains(body, "document.write") {
			t.Errorf("%s builds markup from strings", f)
		}
	}
	for _, p := range []string{"/nope", "/static/", "/static/index.html", "/static/nope.js", "/debug/pprof/", "/static/vendor/cometd/cometd.js", "/cluster/"} {
		if resp, _ := get(http.MethodGet, p, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, resp.StatusCode)
		}
	}
	if resp, _ := get(http.MethodPost, "/", nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d", resp.StatusCode)
	}
	if resp, body := get(http.MethodHead, "/", nil); resp.StatusCode != http.StatusOK || body != "" {
		t.Errorf("HEAD /: %d %q", resp.StatusCode, body)
	}
}

// peer is one Bayeux session over long-polling.
type peer struct {
	*bayeuxtest.Peer
	id   string
	seen []msg // deliveries received so far
}

func newPeer(t *testing.T, url string) *peer {
	p := &peer{Peer: &bayeuxtest.Peer{T: t, URL: url}}
	p.id = p.Handshake(nil)
	return p
}

func (p *peer) subscribe(ch string) {
	p.T.Helper()
	p.MustSucceed(msg{"channel": "/meta/subscribe", "clientId": p.id, "subscription": ch})
}

// publish publishes data and returns the reply.
func (p *peer) publish(ch string, data any) msg {
	p.T.Helper()
	r := p.Post(msg{"channel": ch, "clientId": p.id, "data": data})
	if len(r) != 1 {
		p.T.Fatalf("publish %s: %v", ch, r)
	}
	return r[0]
}

// await connects until a delivery on ch satisfies pred, and returns its data.
func (p *peer) await(ch string, pred func(membersEvent) bool) membersEvent {
	p.T.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for i, m := range p.seen {
			if m["channel"] != ch {
				continue
			}
			var ev membersEvent
			raw, _ := json.Marshal(m["data"])
			if err := json.Unmarshal(raw, &ev); err == nil && pred(ev) {
				p.seen = append(p.seen[:i:i], p.seen[i+1:]...)
				return ev
			}
		}
		if time.Now().After(deadline) {
			p.T.Fatalf("no matching delivery on %s; seen %v", ch, p.seen)
		}
		d, _ := bayeuxtest.Split(p.Connect(p.id, nil))
		p.seen = append(p.seen, d...)
	}
}

func memberNames(ev membersEvent) []string {
	out := make([]string, len(ev.Members))
	for i, m := range ev.Members {
		out[i] = m.Name
	}
	return out
}

func listIs(want ...string) func(membersEvent) bool {
	return func(ev membersEvent) bool { return equal(memberNames(ev), want) }
}

func join(room, name, token string) msg {
	return msg{"op": "join", "room": room, "name": name, "token": token}
}

const (
	tokA = "token-of-alice-0123456789"
	tokB = "token-of-bob-0123456789ab"
)

func TestMembersService(t *testing.T) {
	s := newServer(t, Config{})
	a, b := newPeer(t, s.url), newPeer(t, s.url)
	a.subscribe("/members/lobby")
	b.subscribe("/members/lobby")

	if r := a.publish(MembersService, join("lobby", "alice", tokA)); r["successful"] != true {
		t.Fatalf("join: %v", r)
	}
	ev := a.await(MembersService, func(ev membersEvent) bool { return ev.Event == "list" })
	if ev.You != memberID(tokA) || !equal(memberNames(ev), []string{"alice"}) || ev.Version == 0 {
		t.Fatalf("answer to alice: %+v", ev)
	}
	bev := b.await("/members/lobby", listIs("alice"))
	if bev.Event != "join" || bev.Member == nil || bev.Member.Name != "alice" || bev.Member.ID != memberID(tokA) {
		t.Fatalf("broadcast of alice's join: %+v", bev)
	}

	b.publish(MembersService, join("lobby", "bob", tokB))
	ev = b.await(MembersService, func(ev membersEvent) bool { return ev.Event == "list" })
	if !equal(memberNames(ev), []string{"alice", "bob"}) || ev.You != memberID(tokB) {
		t.Fatalf("answer to bob: %+v", ev)
	}
	b.await("/members/lobby", listIs("alice", "bob")) // its own join
	aev := a.await("/members/lobby", listIs("alice", "bob"))
	if aev.Version <= bev.Version {
		t.Fatalf("versions do not grow: %d then %d", bev.Version, aev.Version)
	}
	// The token never leaves the server, nor does a clientId.
	raw, _ := json.Marshal(aev)
	if strings.Contains(string(raw), tokB) || strings.Contains(string(raw), b.id) {
		t.Fatalf("secret in a broadcast: %s", raw)
	}

	// A refresh answers the publisher and broadcasts nothing: a control
	// message published after it is the next thing bob sees.
	a.publish(MembersService, join("lobby", "alice", tokA))
	a.await(MembersService, func(ev membersEvent) bool { return ev.Event == "list" })
	if _, err := s.b.Publish(context.Background(), "/members/lobby", json.RawMessage(`{"event":"control","room":"lobby"}`)); err != nil {
		t.Fatal(err)
	}
	next := b.await("/members/lobby", func(membersEvent) bool { return true })
	if next.Event != "control" {
		t.Fatalf("refresh broadcast %+v", next)
	}

	// Bad requests fail the publish with 400 and change nothing.
	for _, data := range []any{
		"not an object",
		join("../x", "alice", tokA),
		join("", "alice", tokA),
		join("lobby", "alice", "short"),
		join("lobby", "", tokA),
		join("lobby", "   ", tokA),
		join("lobby", "a\u0000b", tokA),
		join("lobby", strings.Repeat("n", 33), tokA),
		msg{"op": "kick", "room": "lobby", "token": tokA},
	} {
		r := a.publish(MembersService, data)
		if r["successful"] != false || !strings.HasPrefix(fmt.Sprint(r["error"]), "400:") {
			t.Errorf("bad request %v: %v", data, r)
		}
	}

	// A session joins a bounded number of rooms.
	for i := 1; i < maxRoomsPerSession; i++ {
		if r := a.publish(MembersService, join(fmt.Sprintf("room%d", i), "alice", tokA)); r["successful"] != true {
			t.Fatalf("join room%d: %v", i, r)
		}
	}
	if r := a.publish(MembersService, join("onetoomany", "alice", tokA)); r["successful"] != false || !strings.HasPrefix(fmt.Sprint(r["error"]), "429:") {
		t.Fatalf("join of one room too many: %v", r)
	}
	for i := 1; i < maxRoomsPerSession; i++ {
		a.publish(MembersService, msg{"op": "leave", "room": fmt.Sprintf("room%d", i), "token": tokA})
	}

	// Alice leaves: bob sees it.
	a.publish(MembersService, msg{"op": "leave", "room": "lobby", "token": tokA})
	lev := b.await("/members/lobby", listIs("bob"))
	if lev.Event != "leave" || lev.Member == nil || lev.Member.ID != memberID(tokA) {
		t.Fatalf("leave broadcast: %+v", lev)
	}

	// Bob's session ends (disconnect, no leave): the node that held it
	// removes him, and alice, back in the room, sees it.
	a.publish(MembersService, join("lobby", "alice", tokA))
	a.await(MembersService, func(ev membersEvent) bool {
		return ev.Event == "list" && equal(memberNames(ev), []string{"alice", "bob"})
	})
	b.MustSucceed(msg{"channel": "/meta/disconnect", "clientId": b.id})
	gone := a.await("/members/lobby", func(ev membersEvent) bool { return ev.Event == "leave" && listIs("alice")(ev) })
	if gone.Member.ID != memberID(tokB) {
		t.Fatalf("leave of an ended session: %+v", gone)
	}
}

func TestMembersExpire(t *testing.T) {
	s := newServer(t, Config{MemberTTL: 300 * time.Millisecond, ExpireInterval: 50 * time.Millisecond})
	a, b := newPeer(t, s.url), newPeer(t, s.url)
	a.subscribe("/members/r")
	a.publish(MembersService, join("r", "alice", tokA))
	b.publish(MembersService, join("r", "bob", tokB))
	a.await("/members/r", listIs("alice", "bob"))
	// Neither refreshes: both expire; alice is told about bob (and herself).
	ev := a.await("/members/r", func(ev membersEvent) bool { return ev.Event == "expire" && ev.Member.Name == "bob" })
	if len(ev.Members) > 1 {
		t.Fatalf("after bob's expiry: %+v", ev)
	}
}

// TestMembersClusterWide runs two brokers (two nodes: each its own
// sessions and service handlers) sharing one Redis registry: each joining
// page gets the members of both.
func TestMembersClusterWide(t *testing.T) {
	r := testproc.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { _ = c.Close() })
	n1 := newServer(t, Config{Registry: NewRedisRegistry(c)})
	n2 := newServer(t, Config{Registry: NewRedisRegistry(c)})
	a, b := newPeer(t, n1.url), newPeer(t, n2.url)
	a.publish(MembersService, join("lobby", "alice", tokA))
	a.await(MembersService, listIs("alice"))
	b.publish(MembersService, join("lobby", "bob", tokB))
	ev := b.await(MembersService, listIs("alice", "bob"))
	if ev.You != memberID(tokB) {
		t.Fatalf("answer on the second node: %+v", ev)
	}
	// Bob's session ends on node 2: node 2 removes him from the shared list.
	b.MustSucceed(msg{"channel": "/meta/disconnect", "clientId": b.id})
	bayeuxtest.Eventually(t, 5*time.Second, func() error {
		a.publish(MembersService, join("lobby", "alice", tokA))
		d, _ := bayeuxtest.Split(a.Connect(a.id, nil))
		for _, m := range d {
			if m["channel"] == MembersService {
				raw, _ := json.Marshal(m["data"])
				var ev membersEvent
				_ = json.Unmarshal(raw, &ev)
				if equal(memberNames(ev), []string{"alice"}) {
					return nil
				}
				return fmt.Errorf("list %v", memberNames(ev))
			}
		}
		return fmt.Errorf("no answer in %v", d)
	})
}

// redisEngine stands for pkg/cluster's engine: it has a Redis client.
type redisEngine struct {
	engine.Engine
	c *redis.Client
}

func (e redisEngine) Client() redis.UniversalClient { return e.c }

func TestDefaultRegistry(t *testing.T) {
	b, err := broker.New(broker.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	defer c.Close()
	for _, tc := range []struct {
		eng  engine.Engine
		want string
	}{
		{nil, "*demo.memoryRegistry"},
		{engine.NewMemory(engine.MemoryConfig{}), "*demo.memoryRegistry"},
		{redisEngine{engine.NewMemory(engine.MemoryConfig{}), c}, "*demo.redisRegistry"},
	} {
		app, err := New(Config{Broker: b, Engine: tc.eng, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%T", app.reg); got != tc.want {
			t.Errorf("engine %T: registry %s, want %s", tc.eng, got, tc.want)
		}
	}
}

func TestNodeStats(t *testing.T) {
	s := newServer(t, Config{NodeID: "node-1", Tag: "abc123"})
	p := newPeer(t, s.url)
	p.subscribe(NodesChannel)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		d, _ := bayeuxtest.Split(p.Connect(p.id, nil))
		for _, m := range d {
			if m["channel"] != NodesChannel {
				continue
			}
			raw, _ := json.Marshal(m["data"])
			var ns NodeStats
			if err := json.Unmarshal(raw, &ns); err != nil {
				t.Fatal(err)
			}
			// The reports do not count themselves as publishes.
			if ns.Node != "node-1" || ns.Tag != "abc123" || ns.IntervalMs != 100 || ns.Time == 0 || ns.Publishes != 0 {
				t.Fatalf("stats: %+v", ns)
			}
			if ns.Sessions >= 1 && ns.Handshakes >= 1 && ns.Deliveries >= 1 {
				return // the first reports may predate the session and its deliveries
			}
		}
	}
	t.Fatal("no stats counting the session and its deliveries on " + NodesChannel)
}
