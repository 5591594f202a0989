package broker

import (
	"math"
	"testing"
)

// TestPinMoves: when a node takes its lease again, the websockets that
// carried the sessions taken over meanwhile move no session here any more
// (their frames, sent before the client gave up on them, are forwarded to
// the owner); the other websockets keep moving sessions.
func TestPinMoves(t *testing.T) {
	moved, kept := &Session{id: "moved"}, &Session{id: "kept"}
	tests := []struct {
		name    string
		session *Session
		pinned  bool
	}{
		{"socket of a session taken over", moved, true},
		{"socket of a session kept", kept, false},
		{"socket that held no connect", nil, false},
	}
	b := &Broker{}
	conns := make([]*wsConn, len(tests))
	for i, tc := range tests {
		conns[i] = &wsConn{session: tc.session}
		b.conns.trackWS(conns[i], true)
	}
	b.pinMoves(map[*Session]struct{}{moved: {}})
	for i, tc := range tests {
		if got := conns[i].move.next.Load() == math.MaxInt64; got != tc.pinned {
			t.Errorf("%s: pinned %v, want %v", tc.name, got, tc.pinned)
		}
	}
}
