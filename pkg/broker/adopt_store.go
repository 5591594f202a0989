package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

// This file is the session records adoption reads and writes (adopt.go):
// the SessionStore the broker defines and package cluster implements, the
// state a record holds, and the broker's writes (save, refresh).

// SessionStore keeps the state another node needs to adopt a session when
// its owner dies or drains. Package cluster implements it over Redis; a
// single node has none.
//
// A record names its owner: the owner string of a node ("<tag>", or
// "<tag>.<generation>" under a lease, see Fence), or "" once released by a
// draining node. Every write is a compare-and-set on it, so one node at
// most owns a session.
//
// Cost contract: the broker calls Save once at handshake, once per
// subscription change, and, for sessions with acknowledged (ack or replay)
// delivery, once per delivered batch, before the batch is written. It never
// calls the store per message. Refresh extends the records' lifetime once
// per MaxInterval for every live local session, in one pipelined batch.
// Owner, LeaseHeld and Claim are called only for a session this node does
// not hold whose creator is not alive (or that moved), never while a
// request can be forwarded to its live creator.
//
// All methods are safe for concurrent use and honour ctx.
type SessionStore interface {
	// Owner returns the owner string of id's record ("" when released),
	// or ErrNoRecord.
	Owner(ctx context.Context, id string) (string, error)
	// Claim takes id's record for this node if its owner is still
	// expected, and returns its state and this node's owner string. It
	// returns ErrClaimLost with the current owner when another node was
	// first, ErrNoRecord, or ErrFenced while this node lacks its lease.
	Claim(ctx context.Context, id, expected string) (st *SessionState, owner string, err error)
	// LeaseHeld reports whether node tag still holds its lease: its
	// sessions are not taken over while it does (it may only be stalled).
	LeaseHeld(ctx context.Context, tag string) (bool, error)
	// Save writes st, owned by this node, with a time to live.
	Save(ctx context.Context, st *SessionState) error
	// Delete removes the record of a session that ended.
	Delete(ctx context.Context, id string) error
	// Refresh extends the time to live of the records of ids and returns
	// the ids that have no record (never written because Redis was down,
	// or lost with Redis data); the broker saves those again.
	Refresh(ctx context.Context, ids []string) (missing []string, err error)
	// Release writes states (drain) as owned by no node, for any live
	// node to adopt; a record another node already took is left alone.
	Release(ctx context.Context, states []*SessionState) error
}

// HandOverStore is implemented by a SessionStore that can move a live
// session to another node (adopt_handover.go).
type HandOverStore interface {
	// Self returns the owner string this node writes now, or ErrFenced.
	Self() (string, error)
	// HandOver writes st, this node's session, as owned by to, in one
	// compare-and-set on this node's ownership (ErrOwnershipLost when
	// another node owns it, ErrFenced without the lease).
	HandOver(ctx context.Context, st *SessionState, to string) error
}

// ErrOwnershipLost is returned by SessionStore.Save when another node took
// the session over; the local copy must stop delivering.
var ErrOwnershipLost = errors.New("broker: session owned by another node")

// ErrNoRecord is returned by SessionStore.Owner and Claim when the session
// has no record (it never existed, ended, or expired).
var ErrNoRecord = errors.New("broker: no session record")

// ErrClaimLost is returned by SessionStore.Claim when the record's owner is
// no longer the expected one (another node claimed it first).
var ErrClaimLost = errors.New("broker: session claimed by another node")

// ownerTag returns the node tag of a record's owner string ("" when
// released).
func ownerTag(owner string) string {
	tag, _, _ := strings.Cut(owner, ".")
	return tag
}

// ErrNotAdopted is returned by the broker's adoption (adopt.go) when the
// state cannot become a local session (the node is shutting down, or the
// id is already local).
var ErrNotAdopted = errors.New("broker: session not adopted")

// SessionState is the durable part of a session. Positions are per
// concrete channel: the point up to which the client has everything.
type SessionState struct {
	ID        string   `json:"id"`
	BrowserID string   `json:"b,omitempty"`
	Transport string   `json:"t,omitempty"`
	Subs      []string `json:"s,omitempty"`
	// Ack: the client acknowledges batches (ack extension). Replay: the
	// client asked for replay ids; its batches are acknowledged implicitly
	// by its next /meta/connect.
	Ack    bool `json:"a,omitempty"`
	Replay bool `json:"r,omitempty"`
	// Acked holds, per channel, the position of the last acknowledged
	// publication (or the channel's head when the client subscribed).
	Acked map[string]engine.Position `json:"p,omitempty"`
	// Batches are the delivered, unacknowledged batches, oldest first,
	// each with the positions it reaches.
	Batches   []BatchState `json:"u,omitempty"`
	LastBatch int64        `json:"l,omitempty"`
	// Durable holds extension state that must survive adoption (for
	// example the authenticated identity), as JSON.
	Durable map[string][]byte `json:"d,omitempty"`
	// SameIDRetry: the client resends a /meta/connect whose reply it lost
	// with the same message id (Faye's family: a handshake without
	// minimumVersion); with Batches[].Connect it tells the adopter which
	// batches a replay client already has (Session.implicitAck).
	SameIDRetry bool `json:"f,omitempty"`
	// Exact: written by a drain (Broker.handOff), with the positions of
	// every session, exact since it delivers nothing more. A record
	// without it is a live owner's: a plain session's positions are not in
	// it, so its adopter cannot know what the client missed.
	Exact bool `json:"x,omitempty"`
	// Seen is the highest message id (the client's counter, read in base
	// 36 if Base36) the session processed, 0 if none or unknown. The
	// adopter answers a /meta/connect with a lower id as a stale one
	// (sequencer.Stale): sent before the session moved, it arrives after
	// (a socket to a node that was frozen), and would take a batch into a
	// reply the client no longer reads.
	Seen   uint64 `json:"m,omitempty"`
	Base36 bool   `json:"n,omitempty"`
}

// BatchState is one delivered batch: its id, the connect that carried it
// and, per channel, the position of its last publication.
type BatchState struct {
	ID  int64                      `json:"i"`
	End map[string]engine.Position `json:"e"`
	// Connect is the message id (raw JSON) of the /meta/connect whose
	// reply carried the batch ("" if it had none).
	Connect string `json:"c,omitempty"`
}

// reliable reports whether the session's deliveries are tracked by
// position (ack or replay), which is what makes adoption lossless.
func (st *SessionState) reliable() bool { return st.Ack || st.Replay }

// advance merges pos into m: positions only move forward within an epoch,
// and a new epoch replaces the old one.
func advance(m map[string]engine.Position, ch string, pos engine.Position) {
	old, ok := m[ch]
	if !ok || old.Epoch != pos.Epoch || pos.Offset > old.Offset {
		m[ch] = pos
	}
}

// ackThrough folds the batches with id <= batch into st.Acked.
func (st *SessionState) ackThrough(batch int64) {
	i := 0
	for i < len(st.Batches) && st.Batches[i].ID <= batch {
		if st.Acked == nil {
			st.Acked = map[string]engine.Position{}
		}
		for ch, pos := range st.Batches[i].End {
			advance(st.Acked, ch, pos)
		}
		i++
	}
	st.Batches = st.Batches[i:]
}

// clone returns a deep copy that the store may encode without locks.
func (st *SessionState) clone() *SessionState {
	c := *st
	c.Subs = append([]string(nil), st.Subs...)
	c.Acked = maps.Clone(st.Acked)
	c.Batches = make([]BatchState, len(st.Batches))
	for i, b := range st.Batches {
		c.Batches[i] = BatchState{ID: b.ID, End: maps.Clone(b.End), Connect: b.Connect}
	}
	c.Durable = maps.Clone(st.Durable)
	return &c
}

// storeTimeout bounds one SessionStore call made on a request's path.
const storeTimeout = 3 * time.Second

// save persists s. A session another node took over is dropped here; one
// that could not be written because this node lacks its lease
// (ErrFenced) stays, and its caller delivers nothing.
func (b *Broker) save(ctx context.Context, s *Session) error {
	if b.store == nil {
		return nil
	}
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	err := b.store.Save(ctx, s.snapshot(false))
	if errors.Is(err, ErrOwnershipLost) {
		b.log.Info("session taken over by another node", "session", s.id)
		b.removeSession(s, errMoved)
	}
	if err != nil {
		return fmt.Errorf("save session %s: %w", s.id, err)
	}
	return nil
}

// refreshRecords extends the store records of every local session and
// rewrites the missing ones; the sweeper calls it every MaxInterval/2, and
// it runs off the sweeper's goroutine.
func (b *Broker) refreshRecords(now time.Time) {
	if b.store == nil || b.fenced() || now.Sub(b.lastRefresh) < b.cfg.MaxInterval/2 || !b.refreshing.CompareAndSwap(false, true) {
		return
	}
	b.lastRefresh = now
	ids := b.sessions.ids()
	go func() {
		defer b.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), b.cfg.MaxInterval)
		defer cancel()
		missing, err := b.store.Refresh(ctx, ids)
		if err != nil {
			b.log.Warn("refresh session records", "sessions", len(ids), "err", err)
			return
		}
		for _, id := range missing {
			if s, ok := b.Session(id); ok {
				if err := b.save(ctx, s); err != nil {
					b.log.Warn("rewrite session record", "session", id, "err", err)
					return
				}
			}
		}
		if len(missing) > 0 {
			b.log.Info("session records rewritten", "sessions", len(missing))
		}
	}()
}
