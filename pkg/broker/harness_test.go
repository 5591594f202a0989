package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testBroker is a broker served by an httptest server, running until the
// test ends.
type testBroker struct {
	*Broker
	srv *httptest.Server
	url string // the Bayeux endpoint
}

// newTestBroker starts a broker with short timeouts suitable for tests;
// mutate adjusts the config before New.
func newTestBroker(t *testing.T, mutate func(*Config)) *testBroker {
	t.Helper()
	return startTestBroker(t, mutate, nil)
}

// newRoutedTestBroker is newTestBroker with router r and store st
// installed before the broker runs, as SetCluster requires.
func newRoutedTestBroker(t *testing.T, r Router, st SessionStore) *testBroker {
	t.Helper()
	return startTestBroker(t, nil, func(b *Broker) { b.SetCluster(r, st) })
}

// startTestBroker is newTestBroker; before, if set, runs between New and
// Run.
func startTestBroker(t *testing.T, mutate func(*Config), before func(*Broker)) *testBroker {
	t.Helper()
	cfg := Config{Timeout: 2 * time.Second, MaxInterval: 2 * time.Second, SweepInterval: 50 * time.Millisecond}
	if mutate != nil {
		mutate(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if before != nil {
		before(b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	mux := http.NewServeMux()
	mux.Handle("/cometd", b)
	mux.Handle("/cometd/", b)
	if err := b.HandleDebugServices(); err != nil {
		t.Fatal(err)
	}
	mux.Handle("/debug/bayeux/", http.StripPrefix("/debug/bayeux", b.DebugHandler()))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = b.Shutdown(sctx)
		scancel()
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		<-done
	})
	return &testBroker{Broker: b, srv: srv, url: srv.URL + "/cometd"}
}

// msg is a loosely typed Bayeux message for tests.
type msg = map[string]any

// httpResult is a raw HTTP exchange.
type httpResult struct {
	Status int
	Header http.Header
	Body   []byte
	Msgs   []msg // decoded body when it is a JSON array
}

// post sends body (a string, []byte, or anything JSON-encodable) as
// application/json to url and decodes the reply.
func post(t *testing.T, client *http.Client, url string, body any) httpResult {
	t.Helper()
	var raw []byte
	switch v := body.(type) {
	case string:
		raw = []byte(v)
	case []byte:
		raw = v
	default:
		var err error
		if raw, err = json.Marshal(v); err != nil {
			t.Fatalf("marshal: %v", err)
		}
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Post(url, "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return readResult(t, resp)
}

func readResult(t *testing.T, resp *http.Response) httpResult {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	res := httpResult{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("[")) {
		if err := json.Unmarshal(b, &res.Msgs); err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
	}
	return res
}

// handshake performs a long-polling handshake (and the immediate first
// connect) and returns the clientId.
func (tb *testBroker) handshake(t *testing.T, ext msg) string {
	t.Helper()
	hs := msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}}
	if ext != nil {
		hs["ext"] = ext
	}
	res := post(t, nil, tb.url, []msg{hs})
	if len(res.Msgs) != 1 || res.Msgs[0]["successful"] != true {
		t.Fatalf("handshake failed: %d %s", res.Status, res.Body)
	}
	id := res.Msgs[0]["clientId"].(string)
	res = post(t, nil, tb.url, []msg{{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"}})
	if len(res.Msgs) != 1 || res.Msgs[0]["successful"] != true {
		t.Fatalf("first connect failed: %s", res.Body)
	}
	return id
}

// subscribe subscribes id to each pattern and fails the test unless all
// succeed.
func (tb *testBroker) subscribe(t *testing.T, id string, patterns ...string) {
	t.Helper()
	res := post(t, nil, tb.url, []msg{{"channel": "/meta/subscribe", "clientId": id, "subscription": patterns}})
	if len(res.Msgs) != 1 || res.Msgs[0]["successful"] != true {
		t.Fatalf("subscribe %v: %s", patterns, res.Body)
	}
}

// publish publishes data on ch as id and fails the test unless acknowledged.
func (tb *testBroker) publish(t *testing.T, id, ch string, data any) {
	t.Helper()
	res := post(t, nil, tb.url, []msg{{"channel": ch, "clientId": id, "data": data, "id": "p"}})
	if len(res.Msgs) != 1 || res.Msgs[0]["successful"] != true {
		t.Fatalf("publish %s: %s", ch, res.Body)
	}
}

// connect sends one long-polling /meta/connect and returns the whole reply.
func (tb *testBroker) connect(t *testing.T, id string, ext msg) []msg {
	t.Helper()
	m := msg{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"}
	if ext != nil {
		m["ext"] = ext
	}
	return post(t, nil, tb.url, []msg{m}).Msgs
}

// split separates deliveries (messages without "successful") from replies.
func split(msgs []msg) (deliveries, replies []msg) { return bayeuxtest.Split(msgs) }

// find returns the first message on channel ch.
func find(msgs []msg, ch string) msg {
	for _, m := range msgs {
		if m["channel"] == ch {
			return m
		}
	}
	return nil
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, d time.Duration, f func() error) { bayeuxtest.Eventually(t, d, f) }

// waitHeld waits until the session holds a /meta/connect.
func (tb *testBroker) waitHeld(t *testing.T, id string) {
	t.Helper()
	eventually(t, 2*time.Second, func() error {
		s, ok := tb.Session(id)
		if !ok || !s.hasWaiter() {
			return fmt.Errorf("session %s holds no connect", id)
		}
		return nil
	})
}

// wsDial opens a websocket to the test broker.
func (tb *testBroker) wsDial(t *testing.T) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(tb.url, "http"), nil)
	if err != nil {
		t.Fatalf("ws dial: %v", err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return &wsClient{t: t, c: c}
}

// wsClient is a raw websocket Bayeux peer for tests.
type wsClient struct {
	t *testing.T
	c *websocket.Conn
}

func (w *wsClient) send(msgs ...msg) {
	w.t.Helper()
	b, _ := json.Marshal(msgs)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.c.Write(ctx, websocket.MessageText, b); err != nil {
		w.t.Fatalf("ws write: %v", err)
	}
}

// recv reads one frame (within d) and decodes it.
func (w *wsClient) recv(d time.Duration) ([]msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, b, err := w.c.Read(ctx)
	if err != nil {
		return nil, err
	}
	var out []msg
	if err := json.Unmarshal(b, &out); err != nil {
		w.t.Fatalf("ws frame %s: %v", b, err)
	}
	return out, nil
}

// recvUntil reads frames until pred holds for the messages gathered so far.
func (w *wsClient) recvUntil(d time.Duration, pred func([]msg) bool) []msg {
	w.t.Helper()
	deadline := time.Now().Add(d)
	var all []msg
	for !pred(all) {
		left := time.Until(deadline)
		if left <= 0 {
			w.t.Fatalf("ws: condition not met within %v; got %v", d, all)
		}
		ms, err := w.recv(left)
		if err != nil {
			w.t.Fatalf("ws read: %v (got %v)", err, all)
		}
		all = append(all, ms...)
	}
	return all
}

func (s *Session) hasWaiter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiter != nil
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// newJar returns a cookie jar (for BAYEUX_BROWSER).
func newJar() http.CookieJar {
	j, _ := cookiejar.New(nil)
	return j
}
