package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// badTransport is how a bad-input row reaches the broker.
type badTransport string

const (
	viaJSON  badTransport = "long-polling-json" // POST application/json
	viaForm  badTransport = "long-polling-form" // POST form, message=
	viaJSONP badTransport = "callback-polling"  // GET ?jsonp=cb&message=
	viaWS    badTransport = "websocket"         // one text frame
)

var badTransports = []badTransport{viaJSON, viaForm, viaJSONP, viaWS}

// badWant is the expected outcome of a row: either a request-level
// rejection (HTTP status, or a websocket close) or a 200 response / frame
// whose replies all fail with code.
type badWant struct {
	status    int                  // HTTP status of a request-level error; 0: 200 with Bayeux replies
	wsClose   websocket.StatusCode // websocket close status of a request-level error; 0: reply frame
	code      string               // the error (HTTP body "error", reply "error" or close reason) starts with code+":"
	reconnect string               // expected advice.reconnect of the reply, if set
	channel   string               // expected echoed channel of the reply, if set
	id        string               // expected echoed id (a JSON string's value) of the reply, if set
	header    [2]string            // expected HTTP header name and a substring of its value, if set
}

type badRow struct {
	name      string
	transport badTransport
	raw       string // request body, message parameter or frame; "{cid}" is a live clientId
	method    string // HTTP method (default: POST, or GET for callback-polling)
	query     string // callback-polling: the raw query (default jsonp=cb&message=raw); form: the raw body
	want      badWant
}

// badInputRows returns the table. Request-level and message-level cases run
// on every transport; the rest are transport specific.
func badInputRows() []badRow {
	const (
		connectOK = `{"channel":"/meta/connect","clientId":"{cid}","connectionType":"long-polling"}`
		hsStart   = `[{"channel":"/meta/handshake","id":"h"`
	)
	tooMany := "[" + strings.TrimSuffix(strings.Repeat(connectOK+",", 11), ",") + "]"
	hugeBody := `[{"channel":"/good/x","clientId":"{cid}","data":"` + strings.Repeat("x", 70<<10) + `"}]`
	bigMsg := `[{"channel":"/good/big","clientId":"{cid}","id":"big","data":"` + strings.Repeat("y", 5<<10) + `"}]`

	var rows []badRow
	// Request-level: HTTP 4xx with a Bayeux error body; websocket close.
	requestLevel := []struct {
		name, raw, code string
		status          int
		wsClose         websocket.StatusCode
	}{
		{"malformed JSON truncated", `[{"channel":`, "400", 400, 0},
		{"malformed JSON trailing comma", `[{"channel":"/meta/connect",}]`, "400", 400, 0},
		{"malformed JSON trailing garbage", `[{"channel":"/a"}]]`, "400", 400, 0},
		{"not a message: number", `42`, "400", 400, 0},
		{"not a message: string", `"hello"`, "400", 400, 0},
		{"not a message: null", `null`, "400", 400, 0},
		{"not a message: true", `true`, "400", 400, 0},
		{"empty body", ``, "400", 400, 0},
		{"too many messages", tooMany, "429", 400, 0},
		{"oversized request", hugeBody, "413", 413, websocket.StatusMessageTooBig},
	}
	for _, c := range requestLevel {
		for _, tr := range badTransports {
			w := badWant{status: c.status, code: c.code}
			if tr == viaWS {
				w = badWant{wsClose: websocket.StatusInvalidFramePayloadData, code: c.code}
				if c.wsClose != 0 { // the frame reader (wsframe) closes before the broker decodes it
					w = badWant{wsClose: c.wsClose}
				}
			}
			rows = append(rows, badRow{name: c.name, transport: tr, raw: c.raw, want: w})
		}
	}

	// Message-level: a 200 response (or frame) whose replies fail.
	pub := func(ch string) string {
		return `[{"channel":"` + ch + `","clientId":"{cid}","data":"d","id":"p1"}]`
	}
	sub := func(subscription string) string {
		return `[{"channel":"/meta/subscribe","clientId":"{cid}","subscription":` + subscription + `,"id":"s1"}]`
	}
	withClient := func(ch, clientID, extra string) string {
		return `[{"channel":"` + ch + `","id":"u1"` + clientID + extra + `}]`
	}
	unknown := `,"clientId":"nosuchclient0000000000000000"`
	messageLevel := []struct {
		name, raw string
		w         badWant
	}{
		{"array with a number", `[1]`, badWant{code: "400"}},
		{"array with a string", `["x"]`, badWant{code: "400"}},
		{"array with null", `[null]`, badWant{code: "400"}},
		{"array with an array", `[[` + connectOK + `]]`, badWant{code: "400"}},
		{"missing channel", `[{"clientId":"{cid}","data":1,"id":"m1"}]`, badWant{code: "400", id: "m1"}},
		{"channel as number", `[{"channel":42,"clientId":"{cid}","id":"m2"}]`, badWant{code: "400", id: "m2"}},
		{"clientId as number", `[{"channel":"/meta/connect","clientId":42,"connectionType":"long-polling","id":"m3"}]`,
			badWant{code: "400", id: "m3", channel: "/meta/connect"}},
		{"subscription as number", sub(`42`), badWant{code: "400", id: "s1", channel: "/meta/subscribe"}},
		{"subscription as number before channel and id", `[{"subscription":42,"channel":"/meta/subscribe","clientId":"{cid}","id":"s2"}]`,
			badWant{code: "400", id: "s2", channel: "/meta/subscribe"}},
		{"supportedConnectionTypes as string", hsStart + `,"version":"1.0","supportedConnectionTypes":"long-polling"}]`,
			badWant{code: "400", id: "h", channel: "/meta/handshake"}},
		{"version as number", hsStart + `,"version":1,"supportedConnectionTypes":["long-polling"]}]`, badWant{code: "400", id: "h"}},
		{"id as object", `[{"channel":"/meta/connect","clientId":"{cid}","connectionType":"long-polling","id":{"a":1}}]`, badWant{code: "400"}},
		{"id as array", `[{"channel":"/meta/connect","clientId":"{cid}","connectionType":"long-polling","id":[1]}]`, badWant{code: "400"}},
		{"ext as string", `[{"channel":"/good/x","clientId":"{cid}","data":1,"ext":"x","id":"m7"}]`, badWant{code: "400", id: "m7"}},
		{"advice as string", `[{"channel":"/meta/connect","clientId":"{cid}","connectionType":"long-polling","advice":"x","id":"m8"}]`,
			badWant{code: "400", id: "m8"}},
		{"publish to foo", pub("foo"), badWant{code: "405", id: "p1"}},
		{"publish to /a//b", pub("/a//b"), badWant{code: "405", id: "p1"}},
		{"publish to /a/*/b", pub("/a/*/b"), badWant{code: "405", id: "p1"}},
		{"publish to /a/b*", pub("/a/b*"), badWant{code: "405", id: "p1"}},
		{"publish to /a b", pub("/a b"), badWant{code: "405", id: "p1"}},
		{"publish to wildcard /a/*", pub("/a/*"), badWant{code: "405", id: "p1"}},
		{"publish to wildcard /a/**", pub("/a/**"), badWant{code: "405", id: "p1"}},
		{"publish to /meta/foo", pub("/meta/foo"), badWant{code: "405", id: "p1"}},
		{"publish to /meta/subscribe/x", pub("/meta/subscribe/x"), badWant{code: "405", id: "p1"}},
		{"publish to /meta/Subscribe", pub("/meta/Subscribe"), badWant{code: "405", id: "p1"}},
		{"subscribe to foo", sub(`"foo"`), badWant{code: "405", id: "s1"}},
		{"subscribe to /a//b", sub(`"/a//b"`), badWant{code: "405", id: "s1"}},
		{"subscribe to /a/*/b", sub(`"/a/*/b"`), badWant{code: "405", id: "s1"}},
		{"subscribe to /a/b*", sub(`"/a/b*"`), badWant{code: "405", id: "s1"}},
		{"subscribe to /a b", sub(`"/a b"`), badWant{code: "405", id: "s1"}},
		{"subscribe to a valid and an invalid name", sub(`["/good/ok","/a b"]`), badWant{code: "405", id: "s1"}},
		{"subscribe to /meta/**", sub(`"/meta/**"`), badWant{code: "405", id: "s1"}},
		{"subscribe to /meta/connect", sub(`["/meta/connect"]`), badWant{code: "405", id: "s1"}},
		{"subscribe with empty array", sub(`[]`), badWant{code: "400", id: "s1"}},
		{"unsubscribe with empty array", `[{"channel":"/meta/unsubscribe","clientId":"{cid}","subscription":[],"id":"s3"}]`,
			badWant{code: "400", id: "s3"}},
		{"publish without data", `[{"channel":"/good/x","clientId":"{cid}","id":"p2"}]`, badWant{code: "400", id: "p2"}},
		{"connect with unknown connectionType", `[{"channel":"/meta/connect","clientId":"{cid}","connectionType":"carrier-pigeon","id":"c1"}]`,
			badWant{code: "406", id: "c1"}},
		{"connect without connectionType", `[{"channel":"/meta/connect","clientId":"{cid}","id":"c2"}]`, badWant{code: "400", id: "c2"}},
		{"handshake version 2.0", hsStart + `,"version":"2.0","supportedConnectionTypes":["long-polling","websocket","callback-polling"]}]`,
			badWant{code: "407", id: "h", reconnect: "none"}},
		{"handshake minimumVersion 2.0", hsStart + `,"version":"1.0","minimumVersion":"2.0","supportedConnectionTypes":["long-polling"]}]`,
			badWant{code: "407", id: "h"}},
		{"handshake with no common connection type", hsStart + `,"version":"1.0","supportedConnectionTypes":["flash","iframe"]}]`,
			badWant{code: "406", id: "h", reconnect: "none"}},
		{"handshake without supportedConnectionTypes", hsStart + `,"version":"1.0"}]`, badWant{code: "400", id: "h"}},
		{"handshake without version", hsStart + `,"supportedConnectionTypes":["long-polling"]}]`, badWant{code: "400", id: "h"}},
		{"oversized message", bigMsg, badWant{code: "413", id: "big", channel: "/good/big"}},
	}
	for _, ch := range []string{"/meta/connect", "/meta/subscribe", "/good/x", "/meta/unsubscribe", "/meta/disconnect"} {
		extra := `,"connectionType":"long-polling","subscription":"/good/x","data":1`
		messageLevel = append(messageLevel,
			struct {
				name, raw string
				w         badWant
			}{"unknown clientId on " + ch, withClient(ch, unknown, extra), badWant{code: "402", reconnect: "handshake", id: "u1", channel: ch}},
			struct {
				name, raw string
				w         badWant
			}{"missing clientId on " + ch, withClient(ch, "", extra), badWant{code: "401", reconnect: "handshake", id: "u1", channel: ch}},
		)
	}
	for _, c := range messageLevel {
		for _, tr := range badTransports {
			rows = append(rows, badRow{name: c.name, transport: tr, raw: c.raw, want: c.w})
		}
	}

	// Invalid UTF-8 is refused per message and never published; a
	// websocket text frame that is not UTF-8 is closed by the frame reader.
	notUTF8 := "[{\"channel\":\"/good/x\",\"clientId\":\"{cid}\",\"data\":\"a\xffb\",\"id\":\"u8\"}]"
	for _, tr := range badTransports {
		w := badWant{code: "400", id: "u8", channel: "/good/x"}
		if tr == viaWS {
			w = badWant{wsClose: websocket.StatusInvalidFramePayloadData}
		}
		rows = append(rows, badRow{name: "invalid UTF-8 in data", transport: tr, raw: notUTF8, want: w})
	}

	// Transport specific.
	good := `[{"channel":"/meta/connect","clientId":"nosuchclient","connectionType":"callback-polling"}]`
	msgParam := "&message=" + url.QueryEscape(good)
	for _, cb := range []string{"alert(1)", "a b", "1abc", "a..b", "<script>", strings.Repeat("a", 200), ".a", "a.", "cb;alert(1)", "cb\u2028"} {
		rows = append(rows, badRow{name: "jsonp callback " + cb, transport: viaJSONP, query: "jsonp=" + url.QueryEscape(cb) + msgParam,
			want: badWant{status: 400, code: "400"}})
	}
	rows = append(rows,
		badRow{name: "jsonpcallback alert(1)", transport: viaJSONP, query: "jsonpcallback=alert%281%29" + msgParam, want: badWant{status: 400, code: "400"}},
		badRow{name: "GET without message", transport: viaJSONP, query: "jsonp=cb", want: badWant{status: 400, code: "400"}},
		badRow{name: "form without message", transport: viaForm, query: "msg=" + url.QueryEscape(good), want: badWant{status: 400, code: "400"}},
		badRow{name: "form with too many messages over several parameters", transport: viaForm,
			query: strings.Repeat("message="+url.QueryEscape("["+connectOK+","+connectOK+"]")+"&", 6), want: badWant{status: 400, code: "429"}},
	)
	for _, m := range []string{http.MethodPut, http.MethodDelete, http.MethodPatch} {
		rows = append(rows, badRow{name: "method " + m, transport: viaJSON, method: m, raw: good,
			want: badWant{status: 405, code: "400", header: [2]string{"Allow", "POST"}}})
	}
	return rows
}

// TestBadInput runs the bad-input table against a broker with small limits,
// while two well-behaved clients wait, and checks afterwards that they still
// exchange messages and that no handler panicked.
func TestBadInput(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) {
		c.MaxRequestBytes = 64 << 10
		c.Limits.MaxMessages = 10
		c.Limits.MaxMessageBytes = 4 << 10
		c.MaxInterval = time.Minute // the good clients must outlive the table
	})
	// Serve through a handler that records panics: net/http would recover
	// them silently and the node would appear to keep serving.
	var panicsMu sync.Mutex
	var panics []string
	guard := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v != http.ErrAbortHandler {
					panicsMu.Lock()
					panics = append(panics, fmt.Sprintf("%s %s: %v", r.Method, r.URL.Path, v))
					panicsMu.Unlock()
				}
				panic(v)
			}
		}()
		tb.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { guard.CloseClientConnections(); guard.Close() })
	gtb := &testBroker{Broker: tb.Broker, srv: guard, url: guard.URL + "/cometd"}

	// The well-behaved clients, set up before any bad input: a publisher
	// and a subscriber on each transport (long-polling, callback-polling,
	// websocket), each holding a connect while the table runs.
	publisher := gtb.handshake(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	subs := []*goodSubscriber{
		gtb.startGoodSubscriber(t, ctx, &wg, viaJSON),
		gtb.startGoodSubscriber(t, ctx, &wg, viaJSONP),
		gtb.startGoodSubscriber(t, ctx, &wg, viaWS),
	}

	bad := gtb.handshake(t, nil) // the clientId the bad rows use
	counts := map[badTransport]int{}
	seq := 0
	for _, row := range badInputRows() {
		counts[row.transport]++
		t.Run(string(row.transport)+"/"+row.name, func(t *testing.T) {
			gtb.runBadRow(t, row, strings.ReplaceAll(row.raw, "{cid}", bad))
		})
		// A good publication between every two bad rows.
		gtb.publish(t, publisher, "/good/news", seq)
		seq++
	}
	for range 10 { // and a few after the table
		gtb.publish(t, publisher, "/good/news", seq)
		seq++
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	t.Logf("hostile-input battery: %d rows: %d %s, %d %s, %d %s, %d %s", total,
		counts[viaJSON], viaJSON, counts[viaForm], viaForm, counts[viaJSONP], viaJSONP, counts[viaWS], viaWS)
	for _, tr := range badTransports {
		if counts[tr] < 50 {
			t.Errorf("%s: %d rows, want at least 50", tr, counts[tr])
		}
	}

	// The node kept serving the others: each subscriber received every
	// good publication, once, in order, on its live session.
	for _, sub := range subs {
		eventually(t, 10*time.Second, func() error {
			if got, err := sub.received(); err != nil || len(got) < seq {
				return fmt.Errorf("%s subscriber: %d of %d publications (err %v)", sub.transport, len(got), seq, err)
			}
			return nil
		})
		got, _ := sub.received()
		for i, v := range got {
			if v != i {
				t.Fatalf("%s subscriber: publication %d is %d: received %v", sub.transport, i, v, got)
			}
		}
		if len(got) != seq {
			t.Fatalf("%s subscriber: %d publications, want %d", sub.transport, len(got), seq)
		}
	}
	t.Logf("%d good publications interleaved with the table; each of %d subscribers (long-polling, callback-polling, websocket) received all, in order", seq, len(subs))
	panicsMu.Lock()
	defer panicsMu.Unlock()
	if len(panics) > 0 {
		t.Fatalf("handler panics: %v", panics)
	}
}

func badDecode(t *testing.T, b []byte) []msg {
	t.Helper()
	var out []msg
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return out
}

// goodSubscriber is a well-behaved client subscribed to /good/news that
// keeps a connect held and records the data of every delivery in order.
type goodSubscriber struct {
	transport badTransport
	mu        sync.Mutex
	got       []int
	err       error
}

func (g *goodSubscriber) record(ms []msg) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	connected := false
	for _, m := range ms {
		switch {
		case m["channel"] == "/good/news" && m["successful"] == nil:
			v, _ := m["data"].(float64)
			g.got = append(g.got, int(v))
		case m["channel"] == "/meta/connect":
			if m["successful"] != true && g.err == nil {
				g.err = fmt.Errorf("connect failed: %v", m)
			}
			connected = true
		}
	}
	return connected
}

func (g *goodSubscriber) fail(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		g.err = err
	}
}

func (g *goodSubscriber) received() ([]int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.got...), g.err
}

// startGoodSubscriber handshakes over tr (long-polling JSON,
// callback-polling or websocket), subscribes to /good/news and keeps a
// connect held until ctx ends.
func (tb *testBroker) startGoodSubscriber(t *testing.T, ctx context.Context, wg *sync.WaitGroup, tr badTransport) *goodSubscriber {
	t.Helper()
	g := &goodSubscriber{transport: tr}
	if tr == viaWS {
		ws := tb.wsDial(t)
		ws.send(msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"websocket"}})
		hs := ws.recvUntil(5*time.Second, func(ms []msg) bool { return find(ms, "/meta/handshake") != nil })
		id, _ := find(hs, "/meta/handshake")["clientId"].(string)
		if id == "" {
			t.Fatalf("ws handshake: %v", hs)
		}
		connect := msg{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket"}
		ws.send(connect, msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/good/news"})
		if r := find(ws.recvUntil(5*time.Second, func(ms []msg) bool { return find(ms, "/meta/subscribe") != nil }), "/meta/subscribe"); r["successful"] != true {
			t.Fatalf("ws subscribe: %v", r)
		}
		ws.send(connect) // held
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw, _ := json.Marshal([]msg{connect})
			for ctx.Err() == nil {
				_, b, err := ws.c.Read(ctx)
				if err != nil {
					if ctx.Err() == nil {
						g.fail(err)
					}
					return
				}
				var ms []msg
				if err := json.Unmarshal(b, &ms); err != nil {
					g.fail(err)
					return
				}
				if g.record(ms) { // the held connect ended: hold another
					if err := ws.c.Write(ctx, websocket.MessageText, raw); err != nil && ctx.Err() == nil {
						g.fail(err)
						return
					}
				}
			}
		}()
		return g
	}
	connType := "long-polling"
	if tr == viaJSONP {
		connType = "callback-polling"
	}
	exchange := func(ctx context.Context, m msg) ([]msg, error) {
		raw, _ := json.Marshal([]msg{m})
		var req *http.Request
		if tr == viaJSONP {
			req, _ = http.NewRequestWithContext(ctx, http.MethodGet, tb.url+"?jsonp=goodCb&message="+url.QueryEscape(string(raw)), nil)
		} else {
			req, _ = http.NewRequestWithContext(ctx, http.MethodPost, tb.url, bytes.NewReader(raw))
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		if tr == viaJSONP {
			if !bytes.HasPrefix(b, []byte("/**/goodCb(")) || !bytes.HasSuffix(b, []byte(");")) {
				return nil, fmt.Errorf("JSONP body %q", b)
			}
			b = b[len("/**/goodCb(") : len(b)-2]
		}
		var ms []msg
		if err := json.Unmarshal(b, &ms); err != nil {
			return nil, fmt.Errorf("%d %q: %w", resp.StatusCode, b, err)
		}
		return ms, nil
	}
	hs, err := exchange(context.Background(), msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{connType}})
	if err != nil || len(hs) != 1 || hs[0]["successful"] != true {
		t.Fatalf("%s handshake: %v %v", tr, hs, err)
	}
	id := hs[0]["clientId"].(string)
	connect := msg{"channel": "/meta/connect", "clientId": id, "connectionType": connType}
	for _, m := range []msg{connect, {"channel": "/meta/subscribe", "clientId": id, "subscription": "/good/news"}} {
		if r, err := exchange(context.Background(), m); err != nil || len(r) != 1 || r[0]["successful"] != true {
			t.Fatalf("%s %s: %v %v", tr, m["channel"], r, err)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			ms, err := exchange(ctx, connect)
			if err != nil {
				if ctx.Err() == nil {
					g.fail(err)
				}
				return
			}
			g.record(ms)
		}
	}()
	tb.waitHeld(t, id)
	return g
}

func (tb *testBroker) runBadRow(t *testing.T, row badRow, raw string) {
	t.Helper()
	if row.transport == viaWS {
		tb.runBadWS(t, row, raw)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var req *http.Request
	switch row.transport {
	case viaJSON:
		req, _ = http.NewRequestWithContext(ctx, badOr(row.method, http.MethodPost), tb.url, strings.NewReader(raw))
		req.Header.Set("Content-Type", "application/json")
	case viaForm:
		body := badOr(row.query, "message="+url.QueryEscape(raw))
		req, _ = http.NewRequestWithContext(ctx, badOr(row.method, http.MethodPost), tb.url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	case viaJSONP:
		q := badOr(row.query, "jsonp=cb&message="+url.QueryEscape(raw))
		req, _ = http.NewRequestWithContext(ctx, badOr(row.method, http.MethodGet), tb.url+"?"+q, nil)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", row.transport, err)
	}
	res := readResult(t, resp)
	if row.want.header[0] != "" {
		if v := res.Header.Get(row.want.header[0]); !strings.Contains(v, row.want.header[1]) {
			t.Errorf("header %s = %q, want it to contain %q", row.want.header[0], v, row.want.header[1])
		}
	}
	if row.want.status != 0 {
		if res.Status != row.want.status {
			t.Fatalf("status %d (%s), want %d", res.Status, res.Body, row.want.status)
		}
		var body struct {
			Successful *bool  `json:"successful"`
			Error      string `json:"error"`
		}
		if err := json.Unmarshal(res.Body, &body); err != nil {
			t.Fatalf("error body %q: %v", res.Body, err)
		}
		if body.Successful == nil || *body.Successful {
			t.Errorf("error body %s lacks successful:false", res.Body)
		}
		badCheckCode(t, body.Error, row.want.code)
		return
	}
	if res.Status != http.StatusOK {
		t.Fatalf("status %d (%s), want 200 with a Bayeux error reply", res.Status, res.Body)
	}
	body := res.Body
	if row.transport == viaJSONP {
		body = badUnwrapJSONP(t, res, "cb")
	}
	checkBadReplies(t, badDecode(t, body), row.want)
}

func (tb *testBroker) runBadWS(t *testing.T, row badRow, raw string) {
	t.Helper()
	w := tb.wsDial(t)
	defer w.c.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A write racing with the server's close may fail; the close status
	// is what the row checks.
	werr := w.c.Write(ctx, websocket.MessageText, []byte(raw))
	_, frame, err := w.c.Read(ctx)
	if row.want.wsClose != 0 {
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("want close %v, got frame %s, err %v (write err %v)", row.want.wsClose, frame, err, werr)
		}
		if ce.Code != row.want.wsClose {
			t.Fatalf("close status %v (%q), want %v", ce.Code, ce.Reason, row.want.wsClose)
		}
		if row.want.code != "" {
			badCheckCode(t, ce.Reason, row.want.code)
		}
		return
	}
	if werr != nil || err != nil {
		t.Fatalf("write err %v, read err %v", werr, err)
	}
	checkBadReplies(t, badDecode(t, frame), row.want)
}

// checkBadReplies asserts every reply failed with the wanted code, advice,
// channel and id.
func checkBadReplies(t *testing.T, replies []msg, want badWant) {
	t.Helper()
	if len(replies) == 0 {
		t.Fatalf("no reply")
	}
	for _, r := range replies {
		if r["successful"] != false {
			t.Fatalf("reply %v: want successful:false", r)
		}
		e, _ := r["error"].(string)
		badCheckCode(t, e, want.code)
		if want.reconnect != "" {
			adv, _ := r["advice"].(map[string]any)
			if adv["reconnect"] != want.reconnect {
				t.Errorf("reply %v: advice.reconnect %v, want %q", r, adv["reconnect"], want.reconnect)
			}
		}
		if want.channel != "" && r["channel"] != want.channel {
			t.Errorf("reply %v: channel %v, want %q", r, r["channel"], want.channel)
		}
		if want.id != "" && r["id"] != want.id {
			t.Errorf("reply %v: id %v, want %q", r, r["id"], want.id)
		}
	}
}

func badCheckCode(t *testing.T, e, code string) {
	t.Helper()
	if !strings.HasPrefix(e, code+":") {
		t.Fatalf("error %q, want code %s", e, code)
	}
	if _, ok := protocol.ParseError(e); !ok {
		t.Fatalf("error %q does not follow NNN:args:message", e)
	}
}

// badUnwrapJSONP checks the JSONP envelope and returns the JSON inside it.
func badUnwrapJSONP(t *testing.T, res httpResult, cb string) []byte {
	t.Helper()
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") {
		t.Errorf("Content-Type %q, want text/javascript", ct)
	}
	if v := res.Header.Get("X-Content-Type-Options"); v != "nosniff" {
		t.Errorf("X-Content-Type-Options %q, want nosniff", v)
	}
	prefix, suffix := []byte("/**/"+cb+"("), []byte(");")
	if !bytes.HasPrefix(res.Body, prefix) || !bytes.HasSuffix(res.Body, suffix) {
		t.Fatalf("JSONP body %q, want %s...%s", res.Body, prefix, suffix)
	}
	return res.Body[len(prefix) : len(res.Body)-len(suffix)]
}

func badOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// badJSONPGet sends one callback-polling request with callback cb.
func (tb *testBroker) badJSONPGet(t *testing.T, cb, message string) httpResult {
	t.Helper()
	resp, err := http.Get(tb.url + "?jsonp=" + cb + "&message=" + url.QueryEscape(message))
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	return readResult(t, resp)
}

// TestJSONPWireFormat checks the exact callback-polling envelope and that
// U+2028/U+2029 in published data reach a JSONP client escaped.
func TestJSONPWireFormat(t *testing.T) {
	tb := newTestBroker(t, nil)
	res := tb.badJSONPGet(t, "jQuery_123.cb", `[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["callback-polling"],"id":"1"}]`)
	if res.Status != http.StatusOK {
		t.Fatalf("status %d: %s", res.Status, res.Body)
	}
	hs := badDecode(t, badUnwrapJSONP(t, res, "jQuery_123.cb"))
	id, _ := hs[0]["clientId"].(string)
	if hs[0]["successful"] != true || id == "" || hs[0]["id"] != "1" {
		t.Fatalf("handshake %v", hs)
	}
	for _, m := range []string{
		`[{"channel":"/meta/connect","clientId":"` + id + `","connectionType":"callback-polling"}]`,
		`[{"channel":"/meta/subscribe","clientId":"` + id + `","subscription":"/jsonp/news"}]`,
	} {
		if r := badDecode(t, badUnwrapJSONP(t, tb.badJSONPGet(t, "cb", m), "cb")); r[0]["successful"] != true {
			t.Fatalf("%s: %v", m, r)
		}
	}
	// Faye's parameter name works too.
	resp, err := http.Get(tb.url + "?jsonpcallback=fayeCb&message=" + url.QueryEscape(`[{"channel":"/meta/connect","clientId":"x","connectionType":"callback-polling"}]`))
	if err != nil {
		t.Fatal(err)
	}
	badUnwrapJSONP(t, readResult(t, resp), "fayeCb")

	// Raw U+2028/U+2029 bytes in the publisher's JSON (encoding/json would
	// escape them, so the body is written by hand).
	pub := tb.handshake(t, nil)
	raw := "[{\"channel\":\"/jsonp/news\",\"clientId\":\"" + pub + "\",\"data\":\"a\u2028b\u2029c\"}]"
	if r := post(t, nil, tb.url, raw); len(r.Msgs) != 1 || r.Msgs[0]["successful"] != true {
		t.Fatalf("publish: %s", r.Body)
	}
	res = tb.badJSONPGet(t, "cb", `[{"channel":"/meta/connect","clientId":"`+id+`","connectionType":"callback-polling"}]`)
	body := badUnwrapJSONP(t, res, "cb")
	if bytes.Contains(res.Body, []byte("\u2028")) || bytes.Contains(res.Body, []byte("\u2029")) {
		t.Fatalf("raw U+2028/U+2029 in JSONP body %q", res.Body)
	}
	if !bytes.Contains(body, []byte(`\u2028`)) || !bytes.Contains(body, []byte(`\u2029`)) {
		t.Fatalf("escapes missing in %q", body)
	}
	deliveries, _ := split(badDecode(t, body))
	if d := find(deliveries, "/jsonp/news"); d == nil || d["data"] != "a\u2028b\u2029c" {
		t.Fatalf("deliveries %v", deliveries)
	}
}
