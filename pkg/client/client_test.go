package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/ext"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var transports = []string{protocol.LongPolling, protocol.CallbackPolling, protocol.WebSocket}

// server is a running endpoint: our broker in-process or Faye's process.
type server struct {
	url      string // Bayeux endpoint
	debugURL string // debug API prefix (…/debug/bayeux)
	b        *broker.Broker
}

func newBroker(t *testing.T) *server { return newBrokerWith(t, nil) }

func newBrokerWith(t *testing.T, mod func(*broker.Config)) *server {
	t.Helper()
	cfg := broker.Config{Timeout: time.Second, Extensions: []broker.Extension{ext.Ack{}}}
	if mod != nil {
		mod(&cfg)
	}
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	if err := b.HandleDebugServices(); err != nil {
		t.Fatal(err)
	}
	mux.Handle("/debug/bayeux/", http.StripPrefix("/debug/bayeux", b.DebugHandler()))
	mux.Handle("/cometd", b)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		_ = b.Shutdown(context.Background())
		srv.Close()
		cancel()
		<-done
	})
	return &server{url: srv.URL + "/cometd", debugURL: srv.URL + "/debug/bayeux", b: b}
}

func (s *server) dial(t *testing.T, transport string, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{URL: s.url, Transports: []string{transport}, BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", transport, err)
	}
	if got := c.ConnectionType(); got != transport {
		t.Fatalf("negotiated %q, want %q", got, transport)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

func (s *server) debug(t *testing.T, id, op string) {
	t.Helper()
	resp, err := http.Post(s.debugURL+"/sessions/"+id+"/"+op, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("debug %s %s: %s", op, id, resp.Status)
	}
}

// collector records deliveries.
type collector struct {
	mu   sync.Mutex
	msgs []*Message
}

func (c *collector) handle(m *Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
}

func (c *collector) snapshot() []*Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Message(nil), c.msgs...)
}

// data returns the deliveries' data as strings (JSON strings unquoted).
func (c *collector) data() []string {
	var out []string
	for _, m := range c.snapshot() {
		var s string
		if json.Unmarshal(m.Data, &s) != nil {
			s = string(m.Data)
		}
		out = append(out, s)
	}
	return out
}

func (c *collector) waitFor(t *testing.T, want string) {
	t.Helper()
	bayeuxtest.Eventually(t, 10*time.Second, func() error {
		for _, d := range c.data() {
			if d == want {
				return nil
			}
		}
		return fmt.Errorf("%q not received; got %v", want, c.data())
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustPublish(t *testing.T, c *Client, ch string, data any) {
	t.Helper()
	if err := c.Publish(ctxT(t), ch, data); err != nil {
		t.Fatalf("publish %s: %v", ch, err)
	}
}

func forEachTransport(t *testing.T, f func(t *testing.T, s *server, tr string)) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { f(t, newBroker(t), tr) })
	}
}

func TestPubSub(t *testing.T) {
	forEachTransport(t, func(t *testing.T, s *server, tr string) {
		sub, pub := s.dial(t, tr, nil), s.dial(t, tr, nil)
		var got collector
		if _, err := sub.Subscribe(ctxT(t), "/chat/room", got.handle); err != nil {
			t.Fatal(err)
		}
		mustPublish(t, pub, "/chat/room", "hello")
		got.waitFor(t, "hello")
		if m := got.snapshot()[0]; m.Channel != "/chat/room" {
			t.Fatalf("channel %q", m.Channel)
		}
		// The publisher's own subscription sees its own publish too.
		var own collector
		if _, err := pub.Subscribe(ctxT(t), "/chat/room", own.handle); err != nil {
			t.Fatal(err)
		}
		mustPublish(t, pub, "/chat/room", "again")
		own.waitFor(t, "again")
		got.waitFor(t, "again")
	})
}

func TestWildcards(t *testing.T) {
	forEachTransport(t, func(t *testing.T, s *server, tr string) {
		c, pub := s.dial(t, tr, nil), s.dial(t, tr, nil)
		var one, all collector
		if _, err := c.Subscribe(ctxT(t), "/w/*", one.handle); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Subscribe(ctxT(t), "/w/**", all.handle); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ ch, data string }{
			{"/w/a", "wa"}, {"/w/a/b", "wab"}, {"/wx/a", "wxa"}, {"/w/z", "end"},
		} {
			mustPublish(t, pub, tc.ch, tc.data)
		}
		one.waitFor(t, "end")
		all.waitFor(t, "end")
		if got := strings.Join(one.data(), ","); got != "wa,end" {
			t.Fatalf("/w/* got %s", got)
		}
		if got := strings.Join(all.data(), ","); got != "wa,wab,end" {
			t.Fatalf("/w/** got %s", got)
		}
	})
}

func TestOrdered200(t *testing.T) {
	forEachTransport(t, func(t *testing.T, s *server, tr string) {
		c, pub := s.dial(t, tr, nil), s.dial(t, tr, nil)
		var got collector
		if _, err := c.Subscribe(ctxT(t), "/seq", got.handle); err != nil {
			t.Fatal(err)
		}
		for i := range 200 {
			mustPublish(t, pub, "/seq", i)
		}
		checkSequence(t, &got, 200)
	})
}

// checkSequence waits for n integer deliveries and checks they are 0..n-1
// in order, without duplicates.
func checkSequence(t *testing.T, got *collector, n int) {
	t.Helper()
	bayeuxtest.Eventually(t, 15*time.Second, func() error {
		if l := len(got.snapshot()); l < n {
			return fmt.Errorf("%d of %d received", l, n)
		}
		return nil
	})
	msgs := got.snapshot()
	if len(msgs) != n {
		t.Fatalf("received %d messages, want %d (duplicates?)", len(msgs), n)
	}
	for i, m := range msgs {
		if string(m.Data) != fmt.Sprint(i) {
			t.Fatalf("message %d is %s", i, m.Data)
		}
	}
}

func TestPublishErrors(t *testing.T) {
	forEachTransport(t, func(t *testing.T, s *server, tr string) {
		c := s.dial(t, tr, nil)
		for _, tc := range []struct {
			ch   string
			code int
		}{
			{"/meta/x", protocol.CodeInvalidChannel},
			{"/a/*", protocol.CodeInvalidChannel},
		} {
			err := c.Publish(ctxT(t), tc.ch, "x")
			var pe *protocol.Error
			var ce *Error
			if !errors.As(err, &pe) || pe.Code != tc.code || !errors.As(err, &ce) || ce.Op != "publish" {
				t.Fatalf("publish %s: %v, want code %d", tc.ch, err, tc.code)
			}
		}
		// A refused subscription is an error too, and leaves nothing behind.
		_, err := c.Subscribe(ctxT(t), "/meta/foo", func(*Message) {})
		var pe *protocol.Error
		if !errors.As(err, &pe) || pe.Code != protocol.CodeInvalidChannel {
			t.Fatalf("subscribe /meta/foo: %v", err)
		}
	})
}

func TestUnsubscribe(t *testing.T) {
	forEachTransport(t, func(t *testing.T, s *server, tr string) {
		c, pub := s.dial(t, tr, nil), s.dial(t, tr, nil)
		var u, marker collector
		sub, err := c.Subscribe(ctxT(t), "/u", u.handle)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Subscribe(ctxT(t), "/marker", marker.handle); err != nil {
			t.Fatal(err)
		}
		mustPublish(t, pub, "/u", "before")
		u.waitFor(t, "before")
		if err := sub.Unsubscribe(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		if subs := sessionSubs(t, s, c.ClientID()); strings.Contains(subs, `"/u"`) {
			t.Fatalf("server still has /u: %s", subs)
		}
		mustPublish(t, pub, "/u", "after")
		mustPublish(t, pub, "/marker", "m")
		marker.waitFor(t, "m")
		if got := strings.Join(u.data(), ","); got != "before" {
			t.Fatalf("after unsubscribe got %s", got)
		}
	})
}

func sessionSubs(t *testing.T, s *server, id string) string {
	t.Helper()
	resp, err := http.Get(s.debugURL + "/sessions/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}

func testRehandshake(t *testing.T, s *server, tr string) {
	c, pub := s.dial(t, tr, nil), s.dial(t, tr, nil)
	var got collector
	if _, err := c.Subscribe(ctxT(t), "/re/*", got.handle); err != nil {
		t.Fatal(err)
	}
	mustPublish(t, pub, "/re/a", "before")
	got.waitFor(t, "before")
	old := c.ClientID()
	s.debug(t, old, "expire")
	bayeuxtest.Eventually(t, 15*time.Second, func() error {
		if id := c.ClientID(); id == "" || id == old {
			return fmt.Errorf("clientId %q (old %q)", id, old)
		}
		return nil
	})
	// Resubscription happens before the session is marked ready; publish
	// until a message arrives (a publish before it may be missed by design).
	n := 0
	bayeuxtest.Eventually(t, 15*time.Second, func() error {
		n++
		mustPublish(t, pub, "/re/a", fmt.Sprintf("after-%d", n))
		for _, d := range got.data() {
			if strings.HasPrefix(d, "after-") {
				return nil
			}
		}
		return errors.New("no delivery after re-handshake")
	})
	if c.Handshakes() < 2 {
		t.Fatalf("handshakes %d", c.Handshakes())
	}
}

func TestRehandshakeAfterExpire(t *testing.T) {
	forEachTransport(t, testRehandshake)
}

func TestAckSurvivesDroppedConnectReply(t *testing.T) {
	forEachTransport(t, func(t *testing.T, s *server, tr string) {
		c := s.dial(t, tr, nil)
		if !c.AckEnabled() {
			t.Fatal("ack extension not enabled")
		}
		var got collector
		if _, err := c.Subscribe(ctxT(t), "/acked", got.handle); err != nil {
			t.Fatal(err)
		}
		s.debug(t, c.ClientID(), "drop-next-connect")
		const n = 50
		for i := range n {
			if _, err := s.b.Publish(ctxT(t), "/acked", json.RawMessage(fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
		}
		checkSequence(t, &got, n)
		if c.connectFailures.Load() == 0 {
			t.Fatal("no connect was lost: the drop did not happen")
		}
		if c.Handshakes() != 1 {
			t.Fatalf("re-handshaked (%d): the drop should be recovered by ack", c.Handshakes())
		}
	})
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	forEachTransport(t, func(t *testing.T, s *server, tr string) {
		base := goleak.IgnoreCurrent()
		c, err := Dial(ctxT(t), Config{URL: s.url, Transports: []string{tr}})
		if err != nil {
			t.Fatal(err)
		}
		var got collector
		if _, err := c.Subscribe(ctxT(t), "/bye", got.handle); err != nil {
			t.Fatal(err)
		}
		mustPublish(t, c, "/bye", "x")
		got.waitFor(t, "x")
		if err := c.Close(ctxT(t)); err != nil {
			t.Fatalf("close: %v", err)
		}
		if err := c.Publish(ctxT(t), "/bye", "y"); !errors.Is(err, ErrClosed) {
			t.Fatalf("publish after close: %v", err)
		}
		// Server-side handlers of this client's connections end too.
		// (The broker's engine goroutine may start after the snapshot.)
		goleak.VerifyNone(t, base, goleak.IgnoreTopFunction("github.com/bayeux-cluster/bayeux/pkg/broker/engine.(*Memory).Run"))
		bayeuxtest.Eventually(t, 5*time.Second, func() error {
			if n := s.b.Stats().Sessions; n != 0 {
				return fmt.Errorf("%d sessions left after disconnect", n)
			}
			return nil
		})
	})
}

func TestDialErrors(t *testing.T) {
	s := newBroker(t)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no url", Config{}},
		{"bad scheme", Config{URL: "ftp://x"}},
		{"bad transport", Config{URL: s.url, Transports: []string{"carrier-pigeon"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Dial(ctxT(t), tc.cfg); err == nil {
				t.Fatal("no error")
			}
		})
	}
	t.Run("unreachable is bounded by ctx", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := Dial(ctx, Config{URL: "http://127.0.0.1:1/cometd", Transports: []string{protocol.LongPolling}, BackoffMin: 10 * time.Millisecond})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v", err)
		}
	})
}

func TestTransportNegotiation(t *testing.T) {
	both := []string{protocol.WebSocket, protocol.LongPolling}
	for _, tc := range []struct {
		name   string
		server []string
		client []string
		want   string
	}{
		{"websocket preferred", nil, both, protocol.WebSocket},
		{"long-polling preferred", nil, []string{protocol.LongPolling, protocol.WebSocket}, protocol.LongPolling},
		// The websocket upgrade is refused: the handshake falls back to
		// long-polling and long-polling is negotiated.
		{"server without websocket", []string{protocol.LongPolling}, both, protocol.LongPolling},
		{"callback-polling only", nil, []string{protocol.CallbackPolling}, protocol.CallbackPolling},
		{"callback-polling preferred", nil, []string{protocol.CallbackPolling, protocol.LongPolling, protocol.WebSocket}, protocol.CallbackPolling},
		{"callback-polling after long-polling", nil, []string{protocol.LongPolling, protocol.CallbackPolling}, protocol.LongPolling},
		// The GET is refused (HTTP 400): the handshake falls back to
		// long-polling, which is negotiated.
		{"server without callback-polling", []string{protocol.LongPolling, protocol.WebSocket}, []string{protocol.CallbackPolling, protocol.LongPolling}, protocol.LongPolling},
		// The POST is refused: the handshake is sent by GET and
		// callback-polling is negotiated.
		{"server with callback-polling only", []string{protocol.CallbackPolling}, []string{protocol.LongPolling, protocol.CallbackPolling}, protocol.CallbackPolling},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newBrokerWith(t, func(c *broker.Config) { c.Transports = tc.server })
			c := s.dial(t, tc.want, func(c *Config) { c.Transports = tc.client })
			var got collector
			if _, err := c.Subscribe(ctxT(t), "/neg", got.handle); err != nil {
				t.Fatal(err)
			}
			mustPublish(t, c, "/neg", "ok")
			got.waitFor(t, "ok")
		})
	}
}

func TestReplaySubscribeExt(t *testing.T) {
	for _, tc := range []struct {
		name  string
		on    bool
		known map[string]int64
		from  *int64
		want  string
	}{
		{"off", false, map[string]int64{"/r": 5}, nil, ""},
		{"no id", true, nil, nil, ""},
		{"explicit start", true, nil, ptr(int64(-2)), `{"replay":{"/r":-2}}`},
		{"last seen wins", true, map[string]int64{"/r": 9}, ptr(int64(-1)), `{"replay":{"/r":9}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Client{replayOn: tc.on, replayIDs: map[string]int64{}}
			for k, v := range tc.known {
				c.replayIDs[k] = v
			}
			m := c.subscribeMsgLocked("id", "/r", tc.from)
			if string(m.Ext) != tc.want {
				t.Fatalf("ext %s, want %s", m.Ext, tc.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestBackoffBounds(t *testing.T) {
	c := &Client{cfg: Config{BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second}}
	for attempt, want := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		want *= time.Millisecond
		for range 20 {
			if d := c.backoff(attempt); d < want/2 || d > want {
				t.Fatalf("attempt %d: %v not in [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
}

func TestReplayIDOf(t *testing.T) {
	for _, tc := range []struct {
		m    wireMsg
		want int64
	}{
		{wireMsg{Ext: map[string]json.RawMessage{"replay": json.RawMessage("7")}}, 7},
		{wireMsg{Data: json.RawMessage(`{"event":{"replayId":42}}`)}, 42},
		{wireMsg{Data: json.RawMessage(`"x"`)}, 0},
	} {
		if got := replayIDOf(&tc.m); got != tc.want {
			t.Errorf("%+v: %d, want %d", tc.m, got, tc.want)
		}
	}
}

// A publish never waits behind the held connect (long-polling uses a
// separate HTTP request; websocket multiplexes on the socket).
func TestPublishNotBehindHeldConnect(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s := newBrokerWith(t, func(c *broker.Config) { c.Timeout = 30 * time.Second })
			c := s.dial(t, tr, nil)
			bayeuxtest.Eventually(t, 5*time.Second, func() error {
				if info := sessionSubs(t, s, c.ClientID()); !strings.Contains(info, `"held":true`) {
					return fmt.Errorf("connect not held yet: %s", info)
				}
				return nil
			})
			start := time.Now()
			mustPublish(t, c, "/quick", 1)
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("publish took %v: it waited behind the held connect", d)
			}
		})
	}
}
