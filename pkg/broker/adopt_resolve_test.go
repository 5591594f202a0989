package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"
)

// fakeMembers is a fixed membership for resolve.
type fakeMembers struct {
	alive  map[string]bool
	live   []string
	quorum bool
	failed map[string]time.Duration // recent failures, how long ago
}

func (m *fakeMembers) Creator(id string) (string, bool) {
	if len(id) < 6 {
		return "", false
	}
	return id[:6], true
}
func (m *fakeMembers) Alive(tag string) bool { return m.alive[tag] }
func (m *fakeMembers) Live() []string        { return m.live }
func (m *fakeMembers) Quorum() bool          { return m.quorum }
func (m *fakeMembers) FailedFor(tag string) (time.Duration, bool) {
	ago, ok := m.failed[tag]
	return ago, ok
}
func (m *fakeMembers) AdoptDelay() time.Duration { return time.Second }
func (m *fakeMembers) Forward(context.Context, string, *ForwardedRequest) (*ForwardedResponse, error) {
	return nil, errors.New("not forwarding")
}
func (m *fakeMembers) SessionOp(context.Context, string, string, SessionOpKind) (bool, error) {
	return false, errors.New("not forwarding")
}

// fakeRecords is one session record for resolve; it counts the calls.
type fakeRecords struct {
	owner    string
	ownerErr error
	lease    bool
	claimErr error
	claimCur string // the current owner when claimErr is ErrClaimLost
	calls    []string
}

func (s *fakeRecords) Owner(context.Context, string) (string, error) {
	s.calls = append(s.calls, "owner")
	return s.owner, s.ownerErr
}
func (s *fakeRecords) LeaseHeld(context.Context, string) (bool, error) {
	s.calls = append(s.calls, "lease")
	return s.lease, nil
}
func (s *fakeRecords) Claim(_ context.Context, id, expected string) (*SessionState, string, error) {
	s.calls = append(s.calls, "claim "+expected)
	if s.claimErr != nil {
		return nil, s.claimCur, s.claimErr
	}
	return &SessionState{ID: id}, "nodebb.1", nil
}
func (s *fakeRecords) Save(context.Context, *SessionState) error           { return nil }
func (s *fakeRecords) Delete(context.Context, string) error                { return nil }
func (s *fakeRecords) Refresh(context.Context, []string) ([]string, error) { return nil, nil }
func (s *fakeRecords) Release(context.Context, []*SessionState) error      { return nil }

// TestResolve: who serves a session this node (nodebb) does not hold,
// and when its record is taken over; a live creator costs no store call.
func TestResolve(t *testing.T) {
	const id = "nodeaa0123456789"
	alive := func(tags ...string) map[string]bool {
		m := map[string]bool{"nodebb": true}
		for _, t := range tags {
			m[t] = true
		}
		return m
	}
	self := []string{"nodebb"}
	tests := []struct {
		name     string
		id       string
		hops     int
		draining bool
		noStore  bool
		members  fakeMembers
		store    fakeRecords
		want     string // "402", "503", "node X", "adopt", "error"
		calls    []string
	}{
		{"forged id", "x", 0, false, false, fakeMembers{alive: alive("nodeaa")}, fakeRecords{}, "402", nil},
		{"live creator, no store call", id, 0, false, false, fakeMembers{alive: alive("nodeaa")}, fakeRecords{}, "node nodeaa", nil},
		{"live creator, forwarded: the record says", id, 1, false, false, fakeMembers{alive: alive("nodeaa", "nodecc"), quorum: true}, fakeRecords{owner: "nodecc.2"}, "node nodecc", []string{"owner"}},
		{"draining: the record says", id, 0, true, false, fakeMembers{alive: alive("nodeaa")}, fakeRecords{owner: "nodeaa.1"}, "node nodeaa", []string{"owner"}},
		{"no store: the session died", id, 0, false, true, fakeMembers{alive: alive()}, fakeRecords{}, "402", nil},
		{"no record", id, 0, false, false, fakeMembers{alive: alive()}, fakeRecords{ownerErr: ErrNoRecord}, "402", []string{"owner"}},
		{"store error", id, 0, false, false, fakeMembers{alive: alive()}, fakeRecords{ownerErr: errors.New("down")}, "error", []string{"owner"}},
		{"live owner", id, 0, false, false, fakeMembers{alive: alive("nodecc")}, fakeRecords{owner: "nodecc.3"}, "node nodecc", []string{"owner"}},
		{"dead owner, no quorum", id, 0, false, false, fakeMembers{alive: alive(), live: self}, fakeRecords{owner: "nodeaa.1"}, "503", []string{"owner"}},
		{"dead owner, failure too recent", id, 0, false, false, fakeMembers{alive: alive(), live: self, quorum: true, failed: map[string]time.Duration{"nodeaa": 500 * time.Millisecond}}, fakeRecords{owner: "nodeaa.1"}, "503", []string{"owner"}},
		{"dead owner, lease held", id, 0, false, false, fakeMembers{alive: alive(), live: self, quorum: true, failed: map[string]time.Duration{"nodeaa": 2 * time.Second}}, fakeRecords{owner: "nodeaa.1", lease: true}, "503", []string{"owner", "lease"}},
		{"dead owner, adopted here", id, 0, false, false, fakeMembers{alive: alive(), live: self, quorum: true, failed: map[string]time.Duration{"nodeaa": 2 * time.Second}}, fakeRecords{owner: "nodeaa.1"}, "adopt", []string{"owner", "lease", "claim nodeaa.1"}},
		{"dead owner, another adopter", id, 0, false, false, fakeMembers{alive: alive("nodecc"), live: []string{"nodecc"}, quorum: true}, fakeRecords{owner: "nodeaa.1"}, "node nodecc", []string{"owner", "lease"}},
		{"dead owner, forwarded: taken here", id, 1, false, false, fakeMembers{alive: alive("nodecc"), live: []string{"nodecc"}, quorum: true}, fakeRecords{owner: "nodeaa.1"}, "adopt", []string{"owner", "lease", "claim nodeaa.1"}},
		{"released, no other adopter while draining", id, 0, true, false, fakeMembers{alive: alive(), live: self}, fakeRecords{owner: ""}, "503", []string{"owner"}},
		{"released, adopted without the dead-owner checks", id, 0, false, false, fakeMembers{alive: alive(), live: self}, fakeRecords{owner: ""}, "adopt", []string{"owner", "claim "}},
		{"own record without the session", id, 0, false, false, fakeMembers{alive: alive()}, fakeRecords{owner: "nodebb.1"}, "adopt", []string{"owner", "claim nodebb.1"}},
		{"claim lost to a live node", id, 1, false, false, fakeMembers{alive: alive("nodecc"), quorum: true}, fakeRecords{owner: "nodeaa.1", claimErr: ErrClaimLost, claimCur: "nodecc.1"}, "node nodecc", []string{"owner", "lease", "claim nodeaa.1"}},
		{"claim lost to a dead node", id, 1, false, false, fakeMembers{alive: alive(), quorum: true}, fakeRecords{owner: "nodeaa.1", claimErr: ErrClaimLost, claimCur: "nodedd.1"}, "503", []string{"owner", "lease", "claim nodeaa.1"}},
		{"claim without the lease", id, 1, false, false, fakeMembers{alive: alive(), quorum: true}, fakeRecords{owner: "nodeaa.1", claimErr: fmt.Errorf("claim: %w", ErrFenced)}, "503", []string{"owner", "lease", "claim nodeaa.1"}},
		{"record gone before the claim", id, 1, false, false, fakeMembers{alive: alive(), quorum: true}, fakeRecords{owner: "nodeaa.1", claimErr: ErrNoRecord}, "402", []string{"owner", "lease", "claim nodeaa.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &Broker{cfg: Config{IDPrefix: "nodebb"}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			b.router = &tt.members
			if !tt.noStore {
				b.store = &tt.store
			}
			b.shuttingDown.Store(tt.draining)
			rt, err := b.resolve(context.Background(), tt.id, tt.hops)
			var got string
			switch {
			case err != nil:
				got = "error"
			case rt.unavailable:
				got = "503"
			case rt.node != "":
				got = "node " + rt.node
			case rt.adopt != nil:
				got = "adopt"
			default:
				got = "402"
			}
			if got != tt.want {
				t.Errorf("route %s (err %v), want %s", got, err, tt.want)
			}
			if fmt.Sprint(tt.store.calls) != fmt.Sprint(tt.calls) {
				t.Errorf("store calls %q, want %q", tt.store.calls, tt.calls)
			}
		})
	}
}

// TestAdopter: the rendezvous choice is the same on every node, spreads a
// dead node's sessions over the survivors, and skips a draining node.
func TestAdopter(t *testing.T) {
	live := []string{"amho36", "h52wqm", "y7gkdf"} // tags as NodeTag makes them
	count := map[string]int{}
	for i := range 3000 {
		id := fmt.Sprintf("nodedd%020d", i)
		a := adopter(live, id, live[0], false)
		if b := adopter([]string{live[2], live[0], live[1]}, id, live[1], false); a != b {
			t.Fatalf("%s: adopter %s on one node, %s on another", id, a, b)
		}
		if ex := adopter(live, id, live[0], true); ex == live[0] || (a != live[0] && ex != a) {
			t.Fatalf("%s: adopter %s excluding %s (%s with it)", id, ex, live[0], a)
		}
		count[a]++
	}
	for _, tag := range live {
		if count[tag] < 800 {
			t.Errorf("adopter counts %v: %s takes too few", count, tag)
		}
	}
	if got := adopter([]string{"amho36"}, "x", "amho36", true); got != "" {
		t.Errorf("adopter with only the draining node: %q, want none", got)
	}
}
