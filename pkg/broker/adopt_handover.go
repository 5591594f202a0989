package broker

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// This file moves a session to the node its websocket is attached to (the
// hand-over, docs/architecture.md section 12; part of adoption, adopt.go). Node W, serving a websocket
// frame for a session a live node O owns, asks O (session op hand-over).
// O stops the session's deliveries, answers its held connect with retry
// advice, writes its record with exact positions as owned by W in one
// compare-and-set, and removes it; W then claims the record and adopts it
// as a drained one, and processes the frame here. Anything else (O
// refuses, fails, or cannot be reached) leaves the request to be
// forwarded as before.

// OpHandOver is the session op that moves a session to another node; on
// the wire it names the receiving node's owner string after a colon
// ("hand-over:<tag>.<gen>", handOverOp).
const OpHandOver SessionOpKind = "hand-over"

// handOverOp is the op asking for a hand-over to the owner string to.
func handOverOp(to string) SessionOpKind { return OpHandOver + ":" + SessionOpKind(to) }

// moveGate paces one websocket's hand-over attempts: after one (moved,
// refused or failed) it makes no other for HandOverHold. Its zero value
// allows an attempt.
type moveGate struct {
	next atomic.Int64 // unix nanoseconds before which no attempt is made
}

// handOverEnabled reports whether sessions follow their websocket.
func (b *Broker) handOverEnabled() bool { return b.cfg.HandOverHold > 0 && b.store != nil }

// moveHere tries to move clientID, which rt (resolve's answer) sends to
// another node, to this node, for a websocket frame (gate). It returns
// the route to take: after a hand-over (or a failed one, which may have
// moved it) the record decides (resolve as for a forwarded request: a
// record now naming this node is claimed and adopted here).
func (b *Broker) moveHere(ctx context.Context, gate *moveGate, rt sessionRoute, clientID string) (sessionRoute, error) {
	now := time.Now()
	if gate == nil || !b.handOverEnabled() || b.shuttingDown.Load() || b.fenced() || now.UnixNano() < gate.next.Load() {
		return rt, nil
	}
	hs, ok := b.store.(HandOverStore)
	if !ok {
		return rt, nil
	}
	self, err := hs.Self()
	if err != nil {
		return rt, nil
	}
	gate.next.Store(now.Add(b.cfg.HandOverHold).UnixNano())
	asked := rt.node
	for try := 0; ; try++ {
		octx, cancel := context.WithTimeout(ctx, storeTimeout)
		moved, err := b.router.SessionOp(octx, asked, clientID, handOverOp(self))
		cancel()
		if err != nil {
			b.log.Debug("hand-over failed", "session", clientID, "owner", asked, "err", err)
		}
		if !moved && err == nil && try > 0 {
			return rt, nil // refused by its owner: forward
		}
		// Moved, failed (it may have moved), or the node asked (the
		// creator) does not hold the session: the record says.
		next, rerr := b.resolve(ctx, clientID, 1)
		if rerr == nil && err == nil && !moved && next == (sessionRoute{}) {
			// No record: the session ended (its creator may hold its
			// tombstone, and answers from it).
			return rt, nil
		}
		if rerr != nil || moved || err != nil || next.node == "" || next.node == asked {
			if moved {
				b.log.Info("session handed over to this node", "session", clientID, "from", asked, "took", time.Since(now))
			}
			return next, rerr
		}
		asked, rt = next.node, next
	}
}

// handOverTo is the owner's side: it moves its session clientID to the
// node whose owner string is to. It reports false (nothing changed here)
// when the session is not here or cannot move now: this node drains, lacks
// its lease, the session ends, is recovering, or arrived less than
// HandOverHold ago (so that a session on two sockets, or a client
// flapping between nodes, does not move back and forth).
func (b *Broker) handOverTo(clientID, to string) (bool, error) {
	hs, ok := b.store.(HandOverStore)
	if !ok || !b.handOverEnabled() {
		return false, nil
	}
	if tag := ownerTag(to); tag == "" || tag == b.cfg.IDPrefix {
		return false, fmt.Errorf("hand-over of %s to %q: not another node", clientID, to)
	}
	s, ok := b.Session(clientID)
	if !ok || b.shuttingDown.Load() || b.fenced() {
		return false, nil
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	s.saveMu.Lock() // no batch is being saved (and so written) meanwhile
	s.mu.Lock()
	refuse := s.closed != nil || s.lost || s.recovering || start.Sub(s.arrived) < b.cfg.HandOverHold
	if !refuse {
		s.lost = true // deliver nothing more from here
	}
	s.mu.Unlock()
	if refuse {
		s.saveMu.Unlock()
		return false, nil
	}
	st := s.snapshot(true) // exact: nothing more is delivered
	err := hs.HandOver(ctx, st, to)
	if errors.Is(err, ErrFenced) { // nothing written: the session stays
		s.mu.Lock()
		s.lost = false
		if s.waiter != nil && len(s.queue) > 0 {
			s.waiter.wakeLocked()
		}
		if s.push != nil && len(s.queue) > 0 {
			s.push.kick()
		}
		s.mu.Unlock()
		s.saveMu.Unlock()
		return false, nil
	}
	s.saveMu.Unlock()
	switch {
	case errors.Is(err, ErrOwnershipLost):
		b.removeSession(s, errMoved)
		return false, nil
	case err != nil:
		// Whether the record changed is unknown: release it, exact, as
		// a drain does (left alone if the receiver owns it already), so
		// that whichever node gets the client next adopts it exactly.
		if rerr := b.store.Release(ctx, []*SessionState{st}); rerr != nil {
			b.log.Warn("release after failed hand-over", "session", clientID, "err", rerr)
		}
		b.removeSession(s, errMoved)
		return false, err
	}
	b.removeSession(s, errMoved)
	b.log.Debug("session handed over", "session", clientID, "to", to, "took", time.Since(start))
	return true, nil
}
