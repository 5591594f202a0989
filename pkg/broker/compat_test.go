package broker

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestCompatDetails covers what real clients do that the Bayeux spec
// leaves open: sfdx-faye's websocket keep-alive "[]" (and the same empty
// array on every transport) is answered with an empty array, never an
// error or a close; a callback-polling request without jsonp or
// jsonpcallback uses Faye's default callback name.
func TestCompatDetails(t *testing.T) {
	tb := newTestBroker(t, nil)
	id := tb.handshake(t, nil)

	t.Run("empty array over long-polling", func(t *testing.T) {
		res := post(t, nil, tb.url, []msg{})
		if res.Status != http.StatusOK || strings.TrimSpace(string(res.Body)) != "[]" {
			t.Fatalf("got %d %q, want 200 []", res.Status, res.Body)
		}
	})
	t.Run("empty array over a form post", func(t *testing.T) {
		resp, err := http.PostForm(tb.url, url.Values{"message": {"[]"}})
		if err != nil {
			t.Fatal(err)
		}
		res := readResult(t, resp)
		if res.Status != http.StatusOK || strings.TrimSpace(string(res.Body)) != "[]" {
			t.Fatalf("got %d %q, want 200 []", res.Status, res.Body)
		}
	})
	t.Run("empty array over callback-polling", func(t *testing.T) {
		res := tb.badJSONPGet(t, "cb", "[]")
		if body := string(badUnwrapJSONP(t, res, "cb")); body != "[]" {
			t.Fatalf("got %q, want []", body)
		}
	})
	t.Run("empty array over websocket, then a publish on the same socket", func(t *testing.T) {
		ws := tb.wsDial(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for range 3 { // sfdx-faye sends it repeatedly as a keep-alive
			if err := ws.c.Write(ctx, websocket.MessageText, []byte("[]")); err != nil {
				t.Fatal(err)
			}
			typ, b, err := ws.c.Read(ctx)
			if err != nil || typ != websocket.MessageText || string(b) != "[]" {
				t.Fatalf("got %v %q %v, want a text frame []", typ, b, err)
			}
		}
		ws.send(msg{"channel": "/compat/x", "clientId": id, "data": 1, "id": "7"})
		got := ws.recvUntil(5*time.Second, func(ms []msg) bool { return find(ms, "/compat/x") != nil })
		if r := find(got, "/compat/x"); r["successful"] != true {
			t.Fatalf("publish after keep-alives: %v", r)
		}
	})
	t.Run("callback-polling without a callback parameter", func(t *testing.T) {
		hs := `[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["callback-polling"],"id":"1"}]`
		for _, q := range []string{"message=" + url.QueryEscape(hs), "jsonp=&message=" + url.QueryEscape(hs)} {
			resp, err := http.Get(tb.url + "?" + q)
			if err != nil {
				t.Fatal(err)
			}
			res := readResult(t, resp)
			body := badUnwrapJSONP(t, res, defaultCallback)
			if !strings.Contains(string(body), `"successful":true`) {
				t.Fatalf("%s: handshake reply %s", q, body)
			}
		}
	})
}

// TestInvalidUTF8NeverForwarded: a long-polling publish whose data is not
// valid UTF-8 is refused (400) and never reaches a websocket subscriber of
// its channel, whose client would otherwise have to close its connection
// (RFC 6455 requires valid UTF-8 in text frames); the subscriber keeps its
// socket and receives the next, valid, publication first.
func TestInvalidUTF8NeverForwarded(t *testing.T) {
	tb := newTestBroker(t, nil)
	const ch = "/compat/utf8"
	ws := tb.wsDial(t)
	ws.send(msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"websocket"}, "id": "1"})
	hs := find(ws.recvUntil(5*time.Second, func(ms []msg) bool { return find(ms, "/meta/handshake") != nil }), "/meta/handshake")
	sid, _ := hs["clientId"].(string)
	ws.send(msg{"channel": "/meta/subscribe", "clientId": sid, "subscription": ch, "id": "2"},
		msg{"channel": "/meta/connect", "clientId": sid, "connectionType": "websocket", "id": "3"})
	if r := find(ws.recvUntil(5*time.Second, func(ms []msg) bool { return find(ms, "/meta/subscribe") != nil }), "/meta/subscribe"); r["successful"] != true {
		t.Fatalf("subscribe: %v", r)
	}

	pub := tb.handshake(t, nil)
	res := post(t, nil, tb.url, "[{\"channel\":\""+ch+"\",\"clientId\":\""+pub+"\",\"data\":\"a\xffb\",\"id\":\"bad\"}]")
	if len(res.Msgs) != 1 || res.Msgs[0]["successful"] != false || !strings.HasPrefix(fmt.Sprint(res.Msgs[0]["error"]), "400") {
		t.Fatalf("publish of invalid UTF-8: %d %s, want a 400 reply", res.Status, res.Body)
	}
	tb.publish(t, pub, ch, "valid")

	// The first delivery on ch is the valid one; connects are renewed as
	// the client would.
	var first msg
	ws.recvUntil(10*time.Second, func(ms []msg) bool {
		for _, m := range ms {
			if m["channel"] == ch && first == nil {
				first = m
			}
		}
		if first == nil && len(ms) > 0 && find(ms[len(ms)-1:], "/meta/connect") != nil {
			ws.send(msg{"channel": "/meta/connect", "clientId": sid, "connectionType": "websocket"})
		}
		return first != nil
	})
	if first["data"] != "valid" {
		t.Fatalf("first delivery to the websocket subscriber: %v, want the valid publication", first)
	}
}
