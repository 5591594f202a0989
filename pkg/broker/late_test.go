package broker_test

import (
	"fmt"
	"slices"
	"testing"

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
		noWindow  bool // reordering off (ReorderWindow < 0)
	}{
		{"counter", "1", []string{"2", "3", "4", "3", "5"}, []bool{false, false, false, true, false}, false},
		{"Faye base 36", "z", []string{"10", "11", "12", "11", "13"}, []bool{false, false, false, true, false}, false},
		{"random hexadecimal", "7a3f", []string{"9c01", "1b22", "f00d", "0a11", "5e5e"}, []bool{false, false, false, false, false}, false},
		{"no reorder window", "1", []string{"2", "3", "4", "3", "5"}, []bool{false, false, false, false, false}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := startXNode(t, func(c *broker.Config) {
				if tc.noWindow {
					c.ReorderWindow = -1
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
