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
