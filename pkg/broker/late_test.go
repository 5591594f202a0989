package broker_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
)

// TestLatePublishRefused: a publish that reaches the session's node after
// a later message of its client was processed (it sat in a node that was
// frozen, or in a connection its client gave up on, longer than the
// reorder window) is refused with 408, not delivered behind its
// publisher's later publications, once the client's ids are seen to
// count. A client whose ids are not a counter (random, hexadecimal) has
// every publish delivered, whatever the order of its ids.
func TestLatePublishRefused(t *testing.T) {
	const ch = "/late"
	tests := []struct {
		name      string
		handshake string   // the handshake's message id
		ids       []string // the publishes' message ids, in arrival order
		refused   []bool
		window    time.Duration // Config.ReorderWindow (0: the default; negative: none)
	}{
		{"counter", "1", []string{"2", "3", "4", "3", "5"}, []bool{false, false, false, true, false}, 0},
		{"Faye base 36", "z", []string{"10", "11", "12", "11", "13"}, []bool{false, false, false, true, false}, 0},
		{"random hexadecimal", "7a3f", []string{"9c01", "1b22", "f00d", "0a11", "5e5e"}, []bool{false, false, false, false, false}, 0},
		{"no reorder window", "1", []string{"2", "3", "4", "3", "5"}, []bool{false, false, false, false, false}, -1},
		// 7 waits a window for 5 and 6, goes on without them (ordering
		// off): 6, one of that gap, is late; 8, after 9, is only a
		// concurrent request's.
		{"gap skipped", "1", []string{"2", "3", "4", "7", "6", "9", "8"}, []bool{false, false, false, false, true, false, false}, 50 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := startXNode(t, func(c *broker.Config) {
				if tc.window != 0 {
					c.ReorderWindow = tc.window
				}
			}, nil)
			p := n.peer
			sub := openX(t, p, nil)
			p.MustSucceed(Msg{"channel": "/meta/subscribe", "clientId": sub, "subscription": ch})
			r := p.Post(Msg{"id": tc.handshake, "channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}})
			if len(r) != 1 || r[0]["successful"] != true {
				t.Fatalf("handshake: %v", r)
			}
			pub := r[0]["clientId"].(string)
			var want []int
			for i, id := range tc.ids {
				r := p.Post(Msg{"id": id, "channel": ch, "clientId": pub, "data": Msg{"n": i}})
				if len(r) != 1 {
					t.Fatalf("publish %s: %v", id, r)
				}
				refused := r[0]["successful"] != true
				if refused != tc.refused[i] {
					t.Errorf("publish %d (id %s): reply %v, refused %v, want %v", i, id, r[0], refused, tc.refused[i])
				}
				if refused && r[0]["error"] != fmt.Sprintf("408:%s:Message arrived after later messages of its client", ch) {
					t.Errorf("publish %d (id %s) refused with %v, want a 408", i, id, r[0]["error"])
				}
				if !tc.refused[i] {
					want = append(want, i)
				}
			}
			d, _ := pollX(t, p, sub, nil)
			if got := ns(deliveriesOf(t, d)); !slices.Equal(got, want) {
				t.Errorf("delivered %v, want %v", got, want)
			}
		})
	}
}
