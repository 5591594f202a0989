package broker

import (
	"context"
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
