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

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/ext"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// TestReplayExtension: over every transport, a replay subscriber gets the
// retained history (-2), live messages with replay ids, every message of
// a lost connect reply (resync, no ack) and, after its session ended, the
// messages published meanwhile (resubscription from the last id), each
// exactly once and in order.
func TestReplayExtension(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s := newBrokerWith(t, func(c *broker.Config) {
				c.Extensions = []broker.Extension{ext.Ack{}, ext.Replay{}}
			})
			pub := func(from, to int) {
				t.Helper()
				for i := from; i < to; i++ {
					if _, err := s.b.Publish(ctxT(t), "/rp", json.RawMessage(fmt.Sprint(i))); err != nil {
						t.Fatal(err)
					}
				}
			}
			pub(0, 5) // retained before the subscriber exists
			c := s.dial(t, tr, func(c *Config) { c.Replay, c.DisableAck = true, true })
			if c.AckEnabled() {
				t.Fatal("ack enabled although disabled")
			}
			var got collector
			if _, err := c.Subscribe(ctxT(t), "/rp", got.handle, WithReplayID(-2)); err != nil {
				t.Fatal(err)
			}
			checkSequence(t, &got, 5)
			pub(5, 10)
			checkSequence(t, &got, 10)

			s.debug(t, c.ClientID(), "drop-next-connect")
			pub(10, 30)
			checkSequence(t, &got, 30)
			if c.connectFailures.Load() == 0 {
				t.Fatal("no connect was lost: the drop did not happen")
			}
			if c.Handshakes() != 1 {
				t.Fatalf("re-handshaked (%d): the drop should be recovered by a replay resync", c.Handshakes())
			}

			old := c.ClientID()
			s.debug(t, old, "expire")
			pub(30, 40) // while the session is gone or being replaced
			checkSequence(t, &got, 40)
			if c.Handshakes() < 2 {
				t.Fatalf("handshakes %d: the session was expired", c.Handshakes())
			}
			var last int64
			for i, m := range got.snapshot() {
				if m.ReplayID <= last {
					t.Fatalf("message %d: replay id %d after %d", i, m.ReplayID, last)
				}
				last = m.ReplayID
			}
			if id, ok := c.LastReplayID("/rp"); !ok || id != last {
				t.Fatalf("LastReplayID %d %v, want %d", id, ok, last)
			}
		})
	}
}

// TestCallbackPollingWire: every request of a callback-polling client is a
// GET with the message and jsonp parameters, answered with a JSONP call.
func TestCallbackPollingWire(t *testing.T) {
	s := newBroker(t)
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	var mu sync.Mutex
	var problems []string
	gets := 0
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		mu.Lock()
		gets++
		switch {
		case r.Method != http.MethodGet:
			problems = append(problems, "method "+r.Method)
		case len(q["message"]) != 1 || !strings.HasPrefix(q.Get("message"), "[") || !json.Valid([]byte(q.Get("message"))):
			problems = append(problems, "message parameter "+q.Get("message"))
		case q.Get("jsonp") == "":
			problems = append(problems, "no jsonp parameter: "+r.URL.RawQuery)
		case r.ContentLength != 0 || len(r.TransferEncoding) > 0:
			problems = append(problems, fmt.Sprintf("a GET with a body: length %d, encoding %v", r.ContentLength, r.TransferEncoding))
		case q.Get("x") != "1":
			problems = append(problems, "the URL's own query was lost: "+r.URL.RawQuery)
		}
		mu.Unlock()
		proxyTo(w, r, hc, s.url)
	}))
	t.Cleanup(front.Close)
	dial := func() *Client {
		c, err := Dial(ctxT(t), Config{URL: front.URL + "/cometd?x=1#frag", Transports: []string{protocol.CallbackPolling}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	c, p := dial(), dial()
	var got collector
	if _, err := c.Subscribe(ctxT(t), "/wire", got.handle); err != nil {
		t.Fatal(err)
	}
	mustPublish(t, p, "/wire", "hi")
	got.waitFor(t, "hi")
	mu.Lock()
	defer mu.Unlock()
	if gets < 6 {
		t.Fatalf("only %d requests went through the front", gets)
	}
	if len(problems) > 0 {
		t.Fatal(strings.Join(problems, "\n"))
	}
}

// proxyTo relays r to target (the broker's endpoint, query kept) and
// copies the response.
func proxyTo(w http.ResponseWriter, r *http.Request, hc *http.Client, target string) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, target+"?"+r.URL.RawQuery, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	resp, err := hc.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		_, _ = w.Write(buf[:n])
		if err != nil {
			return
		}
	}
}

// TestCallbackPollingNoSilentRetry: net/http would send a failed GET again
// on its own when the connection was reused; a callback-polling request
// must fail instead (the connect loop then knows its reply was lost).
func TestCallbackPollingNoSilentRetry(t *testing.T) {
	var mu sync.Mutex
	seen := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen++
		n := seen
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Content-Type", "text/javascript")
			_, _ = fmt.Fprintf(w, "/**/%s([]);", r.URL.Query().Get("jsonp"))
			return
		}
		panic(http.ErrAbortHandler) // the reply is lost in transit
	}))
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	c := &Client{cfg: Config{URL: srv.URL, HTTPClient: hc, Transports: []string{protocol.CallbackPolling}}}
	if err := c.cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	var err error
	if c.cp, err = newCallbackPolling(c); err != nil {
		t.Fatal(err)
	}
	body := []byte(`[{"channel":"/meta/connect"}]`)
	msgs := []*protocol.Message{{Channel: protocol.ChannelConnect}}
	if err := c.cp.send(ctxT(t), msgs, body); err != nil {
		t.Fatalf("first request: %v", err)
	}
	err = c.cp.send(ctxT(t), msgs, body) // on the same, reused connection
	var te *transportError
	if !errors.As(err, &te) {
		t.Fatalf("second request: %v, want a transport error", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen != 2 {
		t.Fatalf("the server saw %d requests, want 2 (no replay of the lost one)", seen)
	}
}

func TestParseJSONP(t *testing.T) {
	for _, tc := range []struct {
		body string
		n    int // messages; -1: error
	}{
		{`/**/cb([{"channel":"/a"},{"channel":"/b"}]);`, 2},
		{`cb([{"channel":"/a"}])`, 1},
		{" \n cb ( [ ] ) ; \n", 0},
		{`cb({"channel":"/a"});`, 1},
		{`/**/cb(["\u2028"]);`, -1}, // not messages
		{`cb([{"channel":"/a","data":"\u2028\u2029"}]);`, 1},
		{`other([])`, -1},
		{`cb2([])`, -1},
		{`cb[]`, -1},
		{`cb([]`, -1},
		{`cb(`, -1},
		{`cb`, -1},
		{``, -1},
		{`[{"channel":"/a"}]`, -1},
		{`cb([{]);`, -1},
		{`cb([1,2]);`, -1},
		{`cb(null)`, 0},
		{`cb([]));`, -1},
		{`<html>502 Bad Gateway</html>`, -1},
	} {
		msgs, err := parseJSONP([]byte(tc.body), "cb")
		if tc.n < 0 {
			if err == nil {
				t.Errorf("%q: no error (%d messages)", tc.body, len(msgs))
			}
			continue
		}
		if err != nil || len(msgs) != tc.n {
			t.Errorf("%q: %d messages, %v; want %d", tc.body, len(msgs), err, tc.n)
		}
	}
}

// TestCallbackPollingMalformed: a server answering anything but a JSONP
// call of the callback yields transport errors (retried until the
// context ends), never a panic or a hang.
func TestCallbackPollingMalformed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		ctype  string
		body   func(cb string) string
		want   string
	}{
		{"plain JSON", 200, "application/json", func(string) string { return `[{"channel":"/meta/handshake","successful":true}]` }, "bad JSONP response"},
		{"wrong callback", 200, "text/javascript", func(string) string { return `/**/jQuery123([]);` }, "bad JSONP response"},
		{"unclosed call", 200, "text/javascript", func(cb string) string { return cb + `([{"channel":"/meta/handshake"}]` }, "bad JSONP response"},
		{"bad JSON inside", 200, "text/javascript", func(cb string) string { return cb + `([{"channel":]);` }, "bad JSONP response"},
		{"empty", 200, "text/javascript", func(string) string { return "" }, "bad JSONP response"},
		{"no reply inside", 200, "text/javascript", func(cb string) string { return cb + `([]);` }, "no reply to /meta/handshake"},
		{"HTML error page", 502, "text/html", func(string) string { return "<html>Bad Gateway</html>" }, "HTTP 502"},
		{"Bayeux request error", 400, "application/json", func(string) string {
			return `{"successful":false,"error":"400::Invalid jsonp callback name"}`
		}, "Invalid jsonp callback name"},
		{"too large", 200, "text/javascript", func(cb string) string { return cb + "([" + strings.Repeat(" ", 4096) + "]);" }, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body(r.URL.Query().Get("jsonp"))))
			}))
			defer srv.Close()
			// Long enough for at least one answered request on a loaded
			// machine (race detector, parallel packages): the error must
			// be the server's, not only the deadline.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			cfg := Config{URL: srv.URL, Transports: []string{protocol.CallbackPolling}, BackoffMin: 10 * time.Millisecond, MaxMessageBytes: 1024}
			c, err := Dial(ctx, cfg)
			if err == nil {
				_ = c.Close(context.Background())
				t.Fatal("dial succeeded")
			}
			if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want a retried transport error containing %q", err, tc.want)
			}
			// One request directly: a transport error.
			c = &Client{cfg: cfg, pending: map[string]chan *wireMsg{}}
			if err := c.cfg.setDefaults(); err != nil {
				t.Fatal(err)
			}
			if c.cp, err = newCallbackPolling(c); err != nil {
				t.Fatal(err)
			}
			_, err = c.request(context.Background(), protocol.CallbackPolling, time.Second, &protocol.Message{Channel: protocol.ChannelHandshake})
			var te *transportError
			if !errors.As(err, &te) {
				t.Fatalf("request: %v, want a transport error", err)
			}
		})
	}
}

// TestCallbackPollingURLLength: a batch whose URL would be too long is
// split into several GETs (here the resubscription after a re-handshake);
// a single message too large for a URL fails at once without a transport
// error, and the client goes on.
func TestCallbackPollingURLLength(t *testing.T) {
	s := newBroker(t)
	const limit = 700
	rt := &urlRecorder{next: &http.Transport{}}
	t.Cleanup(rt.next.CloseIdleConnections)
	c := s.dial(t, protocol.CallbackPolling, func(c *Config) {
		c.MaxURLLength = limit
		c.HTTPClient = &http.Client{Transport: rt}
	})
	pub := s.dial(t, protocol.LongPolling, nil)
	var got collector
	const n = 12
	for i := range n {
		if _, err := c.Subscribe(ctxT(t), fmt.Sprintf("/long/channel/name/number/%02d", i), got.handle); err != nil {
			t.Fatal(err)
		}
	}
	old := c.ClientID()
	rt.reset()
	s.debug(t, old, "expire")
	bayeuxtest.Eventually(t, 15*time.Second, func() error {
		if id := c.ClientID(); id == "" || id == old {
			return fmt.Errorf("clientId %q (old %q)", id, old)
		}
		return nil
	})
	bayeuxtest.Eventually(t, 10*time.Second, func() error {
		if subs := sessionSubs(t, s, c.ClientID()); strings.Count(subs, "/long/channel/name/number/") != n {
			return fmt.Errorf("resubscribed session: %s", subs)
		}
		return nil
	})
	// The resubscription: n subscribes in several GETs, each within the
	// limit, more than one subscribe in some.
	reqs, maxLen, subsSent := rt.stats()
	if subsSent != n || reqs < 2 || reqs >= n || maxLen > limit {
		t.Fatalf("resubscription: %d subscribes in %d GETs, longest URL %d (limit %d)", subsSent, reqs, maxLen, limit)
	}
	for i := range n {
		mustPublish(t, pub, fmt.Sprintf("/long/channel/name/number/%02d", i), fmt.Sprint("m", i))
	}
	for i := range n {
		got.waitFor(t, fmt.Sprint("m", i))
	}

	err := c.Publish(ctxT(t), "/long/channel/name/number/00", strings.Repeat("x", limit))
	var te *transportError
	if err == nil || errors.As(err, &te) || !strings.Contains(err.Error(), "MaxURLLength") {
		t.Fatalf("oversized publish: %v", err)
	}
	mustPublish(t, c, "/long/channel/name/number/00", "after")
	got.waitFor(t, "after")
}

// urlRecorder records the GETs carrying /meta/subscribe messages.
type urlRecorder struct {
	next *http.Transport

	mu       sync.Mutex
	reqs     int // GETs with subscribes
	maxLen   int // longest URL of any request
	subsSent int // subscribe messages
}

func (r *urlRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	u := req.URL.String()
	var msgs []protocol.Message
	_ = json.Unmarshal([]byte(req.URL.Query().Get("message")), &msgs)
	subs := 0
	for _, m := range msgs {
		if m.Channel == protocol.ChannelSubscribe {
			subs++
		}
	}
	r.mu.Lock()
	r.maxLen = max(r.maxLen, len(u))
	if subs > 0 {
		r.reqs++
		r.subsSent += subs
	}
	r.mu.Unlock()
	return r.next.RoundTrip(req)
}

func (r *urlRecorder) reset() {
	r.mu.Lock()
	r.reqs, r.maxLen, r.subsSent = 0, 0, 0
	r.mu.Unlock()
}

func (r *urlRecorder) stats() (reqs, maxLen, subsSent int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reqs, r.maxLen, r.subsSent
}

// TestReplayWildcard: a replay subscriber of a wildcard pattern gets the
// retained history of every matching channel (-2), then live messages, and
// after a lost connect reply resumes each channel after its last id:
// every message once, each channel in order.
func TestReplayWildcard(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s := newBrokerWith(t, func(c *broker.Config) {
				c.Extensions = []broker.Extension{ext.Ack{}, ext.Replay{}}
			})
			next := map[string]int{}
			pub := func(n int) {
				t.Helper()
				for range n {
					for _, ch := range []string{"/w/a", "/w/b"} {
						if _, err := s.b.Publish(ctxT(t), ch, json.RawMessage(fmt.Sprint(next[ch]))); err != nil {
							t.Fatal(err)
						}
						next[ch]++
					}
				}
			}
			pub(3) // retained before the subscriber exists
			c := s.dial(t, tr, func(c *Config) { c.Replay, c.DisableAck = true, true })
			var got collector
			if _, err := c.Subscribe(ctxT(t), "/w/*", got.handle, WithReplayID(-2)); err != nil {
				t.Fatal(err)
			}
			check := func(n int) {
				t.Helper()
				bayeuxtest.Eventually(t, 15*time.Second, func() error {
					if l := len(got.snapshot()); l < 2*n {
						return fmt.Errorf("%d of %d received", l, 2*n)
					}
					return nil
				})
				seen := map[string]int{}
				for _, m := range got.snapshot() {
					if string(m.Data) != fmt.Sprint(seen[m.Channel]) {
						t.Fatalf("%s: got %s, want %d (out of order or repeated)", m.Channel, m.Data, seen[m.Channel])
					}
					seen[m.Channel]++
				}
				if seen["/w/a"] != n || seen["/w/b"] != n {
					t.Fatalf("received %v, want %d per channel", seen, n)
				}
			}
			check(3)
			pub(2)
			check(5)
			s.debug(t, c.ClientID(), "drop-next-connect")
			pub(10)
			check(15)
			if c.connectFailures.Load() == 0 {
				t.Fatal("no connect was lost: the drop did not happen")
			}
			if c.Handshakes() != 1 {
				t.Fatalf("re-handshaked (%d): the drop should be recovered by a replay resync", c.Handshakes())
			}
		})
	}
}
