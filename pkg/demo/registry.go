package demo

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"
)

// Member is one page that joined a chat room. ID is public (derived from
// the page's secret token); ClientID (the Bayeux session that last joined
// or refreshed it) and Expires stay on the server.
type Member struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	ClientID string `json:"-"`
	Expires  time.Time
}

// Snapshot is a room's member list at one version. Versions of a room only
// grow (each change takes max(previous+1, now in ms)), so a page keeps the
// snapshot with the highest version whatever order they reach it in.
type Snapshot struct {
	Room    string
	Version int64
	Members []Member // sorted by name, then id
}

// Removal is what a sweep took out of one room.
type Removal struct {
	Snapshot Snapshot // after the removal
	Removed  []Member
}

// Registry keeps the members of every room, shared by every node that
// serves the demo. Expired members are removed by any call that touches
// their room (and by Expire), each exactly once across the cluster, so the
// node that removed them is the one that announces it.
type Registry interface {
	// Join adds m to room, or refreshes it (new expiry and client id;
	// possibly a new name). changed reports whether the list the others see
	// changed (a new member or a new name); removed lists members that had
	// expired.
	Join(ctx context.Context, room string, m Member, now time.Time) (s Snapshot, changed bool, removed []Member, err error)
	// Leave removes member id from room. With clientID set it removes the
	// member only if that session is still the one that last joined it (a
	// page that re-handshook has a new one).
	Leave(ctx context.Context, room, id, clientID string, now time.Time) (s Snapshot, left bool, removed []Member, err error)
	// Expire removes expired members of every room; it returns only the
	// rooms that changed.
	Expire(ctx context.Context, now time.Time) ([]Removal, error)
}

// NewMemoryRegistry returns a Registry held in this process: correct for a
// single node (the in-memory engine), not shared across a cluster.
func NewMemoryRegistry() Registry {
	return &memoryRegistry{rooms: map[string]*memRoom{}}
}

type memoryRegistry struct {
	mu    sync.Mutex
	rooms map[string]*memRoom
}

type memRoom struct {
	version int64
	members map[string]Member
}

func nextVersion(v int64, now time.Time) int64 {
	return max(v+1, now.UnixMilli())
}

func (r *memoryRegistry) room(name string) *memRoom {
	rm := r.rooms[name]
	if rm == nil {
		rm = &memRoom{members: map[string]Member{}}
		r.rooms[name] = rm
	}
	return rm
}

// pruneLocked removes expired members of rm and returns them.
func (rm *memRoom) pruneLocked(now time.Time) []Member {
	var removed []Member
	for id, m := range rm.members {
		if m.Expires.Before(now) {
			delete(rm.members, id)
			removed = append(removed, m)
		}
	}
	sortMembers(removed)
	return removed
}

func (rm *memRoom) snapshot(room string) Snapshot {
	s := Snapshot{Room: room, Version: rm.version, Members: make([]Member, 0, len(rm.members))}
	for _, m := range rm.members {
		s.Members = append(s.Members, m)
	}
	sortMembers(s.Members)
	return s
}

func (r *memoryRegistry) Join(_ context.Context, room string, m Member, now time.Time) (Snapshot, bool, []Member, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rm := r.room(room)
	removed := rm.pruneLocked(now)
	prev, had := rm.members[m.ID]
	rm.members[m.ID] = m
	changed := !had || prev.Name != m.Name
	if changed || len(removed) > 0 {
		rm.version = nextVersion(rm.version, now)
	}
	return rm.snapshot(room), changed, removed, nil
}

func (r *memoryRegistry) Leave(_ context.Context, room, id, clientID string, now time.Time) (Snapshot, bool, []Member, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rm := r.rooms[room]
	if rm == nil {
		return Snapshot{Room: room}, false, nil, nil
	}
	removed := rm.pruneLocked(now)
	m, had := rm.members[id]
	left := had && (clientID == "" || m.ClientID == clientID)
	if left {
		delete(rm.members, id)
	}
	if left || len(removed) > 0 {
		rm.version = nextVersion(rm.version, now)
	}
	s := rm.snapshot(room)
	if len(rm.members) == 0 {
		// The version lives on in the next room of that name through
		// nextVersion's clock term.
		delete(r.rooms, room)
	}
	return s, left, removed, nil
}

func (r *memoryRegistry) Expire(_ context.Context, now time.Time) ([]Removal, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Removal
	for name, rm := range r.rooms {
		removed := rm.pruneLocked(now)
		if len(removed) == 0 {
			continue
		}
		rm.version = nextVersion(rm.version, now)
		out = append(out, Removal{Snapshot: rm.snapshot(name), Removed: removed})
		if len(rm.members) == 0 {
			delete(r.rooms, name)
		}
	}
	slices.SortFunc(out, func(a, b Removal) int { return strings.Compare(a.Snapshot.Room, b.Snapshot.Room) })
	return out, nil
}

func sortMembers(ms []Member) {
	slices.SortFunc(ms, func(a, b Member) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}
