package broker

import (
	"context"
	"errors"
	"math"
	"time"
)

// This file is the broker's side of fencing (cluster mode, part of
// adoption: adopt.go; docs/architecture.md, "Fencing"): a node that lost its lease (frozen,
// or cut off from Redis, long enough for its sessions to be adopted)
// delivers nothing and acknowledges nothing until it holds the lease
// again and has re-validated its sessions.

// Fence is implemented by a SessionStore whose ownership is leased
// (package cluster). The broker checks it before every delivery and
// before serving a request; the store refuses every write without it.
type Fence interface {
	// Held reports whether this node may act on its sessions now. It is
	// measured on the node's own clock, so a node that was frozen knows
	// it lost the lease as soon as it runs again.
	Held() bool
	// Wait blocks until Held or ctx ends.
	Wait(ctx context.Context) error
	// WatchRegain installs the broker's side of taking the lease again:
	// local returns the ids of the local sessions; regained gets those
	// another node took meanwhile. Both are called before Held reports
	// true again.
	WatchRegain(local func() []string, regained func(moved []string))
}

// ErrFenced is returned by SessionStore writes while this node does not
// hold its lease: nothing was written, and the broker must not act on the
// session (deliver, acknowledge) until it holds it again.
var ErrFenced = errors.New("broker: node lease not held")

// fenceWait bounds how long a request waits for the lease to be taken
// again before it is answered 503 with retry advice.
const fenceWait = 3 * time.Second

// fenced reports whether this node must not act on its sessions now.
func (b *Broker) fenced() bool { return b.fence != nil && !b.fence.Held() }

// awaitFence waits (up to fenceWait) for the lease; false if it is still
// not held.
func (b *Broker) awaitFence(ctx context.Context) bool {
	if !b.fenced() {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, fenceWait)
	defer cancel()
	return b.fence.Wait(ctx) == nil
}

// installFence takes the fence of st, if it has one.
func (b *Broker) installFence(st SessionStore) {
	f, ok := st.(Fence)
	if !ok {
		return
	}
	b.fence = f
	f.WatchRegain(b.sessions.ids, b.regained)
}

// regained ends the sessions another node took while this node did not
// hold its lease: each held connect is answered with retry advice and no
// batch id, so the client's next request reaches the new owner with the
// same clientId, which replays from the record what it has not
// acknowledged. The sessions that stay get their time back: the clients
// could not reach this node while it was away.
//
// The websockets that carried those sessions here move no session here
// any more (adopt_handover.go): their client most likely gave up on them
// during the stall, and frames it sent before (still unread in the socket) would
// otherwise pull the session back from the node the client uses now.
// Their frames are forwarded to the owner, which answers a stale connect
// empty (sequencer.Stale).
func (b *Broker) regained(moved []string) {
	gone := make(map[*Session]struct{}, len(moved))
	for _, id := range moved {
		if s, ok := b.Session(id); ok {
			gone[s] = struct{}{}
		}
	}
	if len(gone) > 0 {
		b.pinMoves(gone)
	}
	for s := range gone {
		b.log.Info("session taken over by another node while this node lacked its lease", "session", s.id)
		b.removeSession(s, errMoved)
	}
	for _, s := range b.sessions.snapshot() {
		s.touch()
	}
}

// pinMoves stops the websockets that carry one of sessions from moving
// any session to this node, for as long as they live.
func (b *Broker) pinMoves(sessions map[*Session]struct{}) {
	for _, c := range b.conns.webSockets() {
		c.mu.Lock()
		_, pin := sessions[c.session]
		c.mu.Unlock()
		if pin {
			c.move.next.Store(math.MaxInt64)
		}
	}
}
