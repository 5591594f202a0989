package broker

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

// TestGapToldAfterSessionEnded: a session ended by an unrecoverable gap
// while its client held no connect still tells the client why (410, not a
// bare 402) on its next request, for one max-interval.
func TestGapToldAfterSessionEnded(t *testing.T) {
	tb := newTestBroker(t, nil)
	id := tb.handshake(t, nil)
	tb.subscribe(t, id, "/gap/*")
	other := tb.handshake(t, nil)
	(*engineHandler)(tb.Broker).OnGap("/gap/*", engine.Position{}, engine.Position{})
	eventually(t, 5*time.Second, func() error {
		if _, ok := tb.Session(id); ok {
			return errors.New("session not reaped yet")
		}
		return nil
	})
	for range 2 { // every request until the client handshakes again
		r := tb.connect(t, id, nil)[0]
		adv, _ := r["advice"].(map[string]any)
		if r["successful"] != false || !strings.HasPrefix(r["error"].(string), "410:/gap/*:") || adv["reconnect"] != "handshake" {
			t.Fatalf("connect after the gap: %v", r)
		}
	}
	// An unrelated session is unaffected; an unknown one still gets 402.
	if r := tb.connect(t, other, msg{}); r[len(r)-1]["successful"] != true {
		t.Fatalf("other session: %v", r)
	}
	if r := tb.connect(t, "nosuchclient", nil)[0]; !strings.HasPrefix(r["error"].(string), "402:") {
		t.Fatalf("unknown client: %v", r)
	}
}

// A /meta/connect that crosses its client's /meta/disconnect (sent at the
// same time, arriving after it) still gets 402 with handshake advice, but
// crossedConnectDelay later, so that the disconnect's reply reaches the
// client first; other late messages get their 402 as before.
func TestConnectAfterDisconnect(t *testing.T) {
	tb := newTestBroker(t, nil)
	id := tb.handshake(t, nil)
	if r := post(t, nil, tb.url, []msg{{"channel": "/meta/disconnect", "clientId": id}}); len(r.Msgs) != 1 || r.Msgs[0]["successful"] != true {
		t.Fatalf("disconnect: %s", r.Body)
	}
	cases := []struct {
		name    string
		m       msg
		delayed bool
	}{
		{"connect", msg{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"}, true},
		{"publish", msg{"channel": "/late", "clientId": id, "data": 1}, false},
		{"subscribe", msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/late"}, false},
		{"connect of an unknown client", msg{"channel": "/meta/connect", "clientId": "nosuchclient", "connectionType": "long-polling"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			r := post(t, nil, tb.url, []msg{c.m})
			took := time.Since(start)
			if len(r.Msgs) != 1 {
				t.Fatalf("reply: %s", r.Body)
			}
			adv, _ := r.Msgs[0]["advice"].(map[string]any)
			if r.Msgs[0]["successful"] != false || !strings.HasPrefix(r.Msgs[0]["error"].(string), "402:") || adv["reconnect"] != "handshake" {
				t.Fatalf("got %v", r.Msgs[0])
			}
			if c.delayed && took < crossedConnectDelay {
				t.Fatalf("answered after %v, before crossedConnectDelay", took)
			}
		})
	}
}
