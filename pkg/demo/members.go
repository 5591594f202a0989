package demo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// Channels of the demo.
const (
	MembersService = "/service/members" // join, refresh, leave (publish); member list answers (delivered to the publisher)
	MembersPrefix  = "/members/"        // + room: member list changes (broadcast)
	ChatPrefix     = "/chat/"           // + room: chat messages (published by the pages)
	NodesChannel   = "/cluster/nodes"   // each node's stats, every StatsInterval
)

var (
	roomPattern  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	tokenPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`)
)

const (
	maxNameRunes       = 32
	maxRoomsPerSession = 16 // a session joins at most this many rooms at once
)

// membersRequest is the data of a publish to /service/members.
type membersRequest struct {
	Op    string `json:"op"` // join (also the periodic refresh) or leave
	Room  string `json:"room"`
	Name  string `json:"name"`
	Token string `json:"token"` // the page's secret; the public member id is derived from it
}

// publicMember is a member as the pages see it.
type publicMember struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// membersEvent is both the answer to a join (delivered to the joining
// session only, with You set) and a change broadcast on /members/<room>.
type membersEvent struct {
	Event   string         `json:"event"` // list (answer), join, leave, expire
	Room    string         `json:"room"`
	Version int64          `json:"version"`
	Members []publicMember `json:"members"`
	Member  *publicMember  `json:"member,omitempty"` // who joined, left or expired (broadcasts)
	You     string         `json:"you,omitempty"`    // the joining page's own member id (answer)
}

// memberID is the public id of the page holding token.
func memberID(token string) string {
	sum := sha256.Sum256([]byte("bayeux-demo-member:" + token))
	return hex.EncodeToString(sum[:8])
}

// cleanName trims name and checks it: 1 to 32 characters, no control
// characters. It is shown by the pages as text, never as markup.
func cleanName(name string) (string, bool) {
	name = strings.TrimSpace(name)
	if name == "" || !utf8.ValidString(name) || utf8.RuneCountInString(name) > maxNameRunes {
		return "", false
	}
	for _, r := range name {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return "", false
		}
	}
	return name, true
}

func badRequest(msg string) *protocol.Error {
	return protocol.NewError(protocol.CodeBadRequest, msg, MembersService)
}

// tracked is a local session that joined rooms through this node: when it
// ends (disconnect, expiry) its memberships end with it.
type tracked struct {
	s     *broker.Session
	rooms map[string]string // room -> member id
}

// members serves /service/members.
type members struct {
	a *App

	mu      sync.Mutex
	byID    map[string]*tracked // by clientId
	sweepAt time.Time
}

func (ms *members) handle(ctx context.Context, s *broker.Session, m *protocol.Message) *protocol.Error {
	var req membersRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		return badRequest("data must be {op, room, name, token}")
	}
	if !roomPattern.MatchString(req.Room) {
		return badRequest("room: 1 to 32 of A-Z a-z 0-9 _ -")
	}
	if !tokenPattern.MatchString(req.Token) {
		return badRequest("token: 16 to 64 of A-Z a-z 0-9 _ -")
	}
	id := memberID(req.Token)
	now := time.Now()
	switch req.Op {
	case "join":
		name, ok := cleanName(req.Name)
		if !ok {
			return badRequest("name: 1 to 32 characters, no control characters")
		}
		if !ms.mayJoin(s.ID(), req.Room) {
			return protocol.NewError(protocol.CodeTooMany, "Too many rooms for one session", MembersService)
		}
		mem := Member{ID: id, Name: name, ClientID: s.ID(), Expires: now.Add(ms.a.cfg.MemberTTL)}
		snap, changed, removed, err := ms.a.reg.Join(ctx, req.Room, mem, now)
		if err != nil {
			ms.a.log.Warn("demo: join failed", "room", req.Room, "err", err)
			return protocol.NewError(protocol.CodeServerUnavailable, "Member registry unavailable", MembersService)
		}
		ms.track(s, req.Room, id)
		// Answer first: the page then has the list before any broadcast
		// about itself (both carry versions anyway).
		s.Deliver(MembersService, mustJSON(membersEvent{Event: "list", Room: req.Room, Version: snap.Version, Members: public(snap.Members), You: id}))
		ms.a.announceRemoved(ctx, snap, removed)
		if changed {
			ms.a.broadcast(ctx, membersEvent{Event: "join", Room: req.Room, Version: snap.Version, Members: public(snap.Members), Member: &publicMember{ID: id, Name: name}})
		}
		return nil
	case "leave":
		snap, left, removed, err := ms.a.reg.Leave(ctx, req.Room, id, "", now)
		if err != nil {
			ms.a.log.Warn("demo: leave failed", "room", req.Room, "err", err)
			return protocol.NewError(protocol.CodeServerUnavailable, "Member registry unavailable", MembersService)
		}
		ms.untrack(s.ID(), req.Room)
		ms.a.announceRemoved(ctx, snap, removed)
		if left {
			ms.a.broadcast(ctx, membersEvent{Event: "leave", Room: req.Room, Version: snap.Version, Members: public(snap.Members), Member: &publicMember{ID: id}})
		}
		return nil
	}
	return badRequest(`op: "join" or "leave"`)
}

// mayJoin reports whether session clientID may join room (it is in
// fewer than maxRoomsPerSession rooms, or already in that one).
func (ms *members) mayJoin(clientID, room string) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	t := ms.byID[clientID]
	if t == nil {
		return true
	}
	_, in := t.rooms[room]
	return in || len(t.rooms) < maxRoomsPerSession
}

func (ms *members) track(s *broker.Session, room, id string) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	t := ms.byID[s.ID()]
	if t == nil || t.s != s {
		t = &tracked{s: s, rooms: map[string]string{}}
		ms.byID[s.ID()] = t
	}
	t.rooms[room] = id
}

func (ms *members) untrack(clientID, room string) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if t := ms.byID[clientID]; t != nil {
		delete(t.rooms, room)
		if len(t.rooms) == 0 {
			delete(ms.byID, clientID)
		}
	}
}

// endedSessions takes the tracked sessions that have ended.
func (ms *members) endedSessions() []*tracked {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	var out []*tracked
	for id, t := range ms.byID {
		if t.s.Ended() {
			out = append(out, t)
			delete(ms.byID, id)
		}
	}
	return out
}

// sweep ends the memberships of ended local sessions, and removes expired
// members of every room (pages that vanished without a leave, or whose
// node died).
func (ms *members) sweep(ctx context.Context, now time.Time) {
	// While the node shuts down its sessions end because they move to
	// other nodes (drain): their members stay, refreshed on the adopter,
	// or expire if nobody adopts them.
	var ended []*tracked
	if !ms.a.b.ShuttingDown() {
		ended = ms.endedSessions()
	}
	for _, t := range ended {
		for room, id := range t.rooms {
			snap, left, removed, err := ms.a.reg.Leave(ctx, room, id, t.s.ID(), now)
			if err != nil {
				ms.a.log.Debug("demo: leave of an ended session failed", "room", room, "err", err)
				continue
			}
			ms.a.announceRemoved(ctx, snap, removed)
			if left {
				ms.a.broadcast(ctx, membersEvent{Event: "leave", Room: room, Version: snap.Version, Members: public(snap.Members), Member: &publicMember{ID: id}})
			}
		}
	}
	if now.Before(ms.sweepAt) {
		return
	}
	ms.sweepAt = now.Add(ms.a.cfg.ExpireInterval)
	rms, err := ms.a.reg.Expire(ctx, now)
	if err != nil {
		ms.a.log.Debug("demo: member expiry failed", "err", err)
	}
	for _, r := range rms {
		ms.a.announceRemoved(ctx, r.Snapshot, r.Removed)
	}
}

func public(ms []Member) []publicMember {
	out := make([]publicMember, len(ms))
	for i, m := range ms {
		out[i] = publicMember{ID: m.ID, Name: m.Name}
	}
	return out
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own plain structs are marshalled
	}
	return b
}
