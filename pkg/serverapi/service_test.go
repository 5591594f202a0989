package serverapi

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
)

// movingPeer is one other node of a cluster on which the session "c1"
// arrives (a hand-over in progress) after the first `after` calls.
type movingPeer struct {
	mu    sync.Mutex
	calls int
	after int
}

func (p *movingPeer) Others() []string { return []string{"other"} }

func (p *movingPeer) Handle(string, func(context.Context, []byte) ([]byte, error)) {}

func (p *movingPeer) Call(_ context.Context, _, method string, _ []byte) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	here := p.calls > p.after
	switch method {
	case callEnd:
		if here {
			return json.Marshal([]string{"c1"})
		}
		return json.Marshal([]string{})
	case callUnsubscribe:
		return json.Marshal(here)
	}
	return nil, errors.New("unknown call")
}

// nobody holds any session on this node.
type nobody struct{}

func (nobody) Sessions() []LocalSession                                  { return nil }
func (nobody) EndSession(string, bool) bool                              { return false }
func (nobody) Unsubscribe(context.Context, string, string) (bool, error) { return false, nil }

// TestSessionInTransit: a clientId-targeted call that finds its session on
// no node asks again (the session may be moving between nodes), and
// answers not found only once the retries are used up.
func TestSessionInTransit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after int // calls before the session shows up on the peer
		found bool
		calls int
	}{
		{"held at once", 0, true, 1},
		{"arrives during the retries", 2, true, 3},
		{"held by no node", 1 << 30, false, transitRetries + 1},
	} {
		for _, op := range []string{"disconnect", "unsubscribe"} {
			t.Run(tc.name+"/"+op, func(t *testing.T) {
				p := &movingPeer{after: tc.after}
				s := NewService(ServiceConfig{Presence: nobody{}, SessionControl: nobody{}, Peers: p, NodeID: "self"})
				var err error
				if op == "disconnect" {
					_, err = s.Disconnect(t.Context(), DisconnectRequest{ClientID: "c1"})
				} else {
					_, err = s.Unsubscribe(t.Context(), UnsubscribeRequest{ClientID: "c1", Channel: "/a"})
				}
				if found := err == nil; found != tc.found {
					t.Fatalf("found %v (err %v), want %v", found, err, tc.found)
				}
				if !tc.found && !errors.Is(err, errNotFound) {
					t.Fatalf("err %v, want not found", err)
				}
				if p.calls != tc.calls {
					t.Fatalf("%d calls to the peer, want %d", p.calls, tc.calls)
				}
			})
		}
	}
}
