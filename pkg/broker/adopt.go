package broker

import (
	"context"
	"errors"
	"hash/fnv"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// Session adoption (cluster mode; docs/architecture.md section 12) is
// decided and done in this package, in the adopt*.go files:
//
//   - adopt.go (here): who serves a session this node does not hold, and
//     when a record may be taken over and by whom (resolve), from the
//     facts the cluster supplies (Members) and the record (SessionStore).
//   - adopt_store.go: the records (SessionStore, SessionState), this
//     node's writes of them (save, refresh), the claim's errors.
//   - adopt_session.go: recreating a claimed session (adopt) and catching
//     its client up from history (catchUp), or telling it of a gap (410).
//   - adopt_drain.go: the drain, which releases every session for a peer.
//   - adopt_handover.go: moving a live session to its websocket's node.
//   - adopt_fence.go: the owner's lease; without it a node acts on no
//     session, and its sessions are adopted only once it is gone.
//
// Package cluster supplies only primitives: membership facts (Members,
// part of the Router), the record's compare-and-set writes and the lease
// (SessionStore, HandOverStore, Fence). session_durable.go holds the
// session's side of what a record keeps (positions, batches).

// Members is what adoption needs to know of the cluster's membership.
// Package cluster implements it (as part of the Router). Every method
// answers from memory: a request forwarded to a live creator costs no
// round trip to the store.
type Members interface {
	// Creator returns the tag of the node that issued clientID; ok is
	// false for a clientId no node can have issued (it is answered as
	// unknown at once, without a look-up).
	Creator(clientID string) (tag string, ok bool)
	// Alive reports whether node tag is a live member.
	Alive(tag string) bool
	// Live returns the tags of the live members, this node included (a
	// draining node too, until it leaves).
	Live() []string
	// Quorum reports whether this node sees at least half of the nodes it
	// knew recently (one cut off from gossip does not).
	Quorum() bool
	// FailedFor reports how long ago node tag was declared failed, and
	// whether it is a recent failure (a node that left on purpose is not).
	FailedFor(tag string) (ago time.Duration, recent bool)
	// AdoptDelay is how long after a failure its sessions may be taken
	// over: by then a node cut off from everyone, which sees its peers
	// fail one by one, has lost its quorum (failure detection reaches each
	// node at a slightly different time).
	AdoptDelay() time.Duration
}

// sessionRoute is where a request for a session this node does not hold
// goes. At most one field is set; the zero value means "no such session"
// (the broker answers 402).
type sessionRoute struct {
	// node is the tag of the node to forward to.
	node string
	// adopt is the session's state, claimed for this node: the broker
	// recreates the session and serves the request.
	adopt *SessionState
	// unavailable: nobody can serve the session now (its owner is being
	// decided); the client gets 503 with retry advice.
	unavailable bool
}

// errMoved ends a local session whose ownership moved to another node
// (drain hand-off, hand-over, or taken over while this node was cut off).
// Its held connect is answered successfully with retry advice: the
// client's next request reaches the new owner with the same clientId.
var errMoved = protocol.NewError(protocol.CodeServerUnavailable, "Session moved")

// resolve decides who serves clientID, which has no local session here.
// hops counts the forwards the request already went through.
//
//  1. The clientId's tag names the node that created the session. While
//     that node is alive it is asked first (no store round trip); it
//     forwards once more if the session moved.
//  2. Otherwise the session record names the owner: a live owner gets the
//     request.
//  3. A record whose owner is dead (or released by a draining node, or
//     this node without the session) is taken over (takeOver).
func (b *Broker) resolve(ctx context.Context, clientID string, hops int) (sessionRoute, error) {
	creator, ok := b.router.Creator(clientID)
	if !ok {
		return sessionRoute{}, nil
	}
	self := b.cfg.IDPrefix
	if hops == 0 && !b.shuttingDown.Load() && creator != self && b.router.Alive(creator) {
		return sessionRoute{node: creator}, nil
	}
	if b.store == nil {
		return sessionRoute{}, nil // sessions die with their owner: 402
	}
	owner, err := b.store.Owner(ctx, clientID)
	switch {
	case errors.Is(err, ErrNoRecord):
		return sessionRoute{}, nil
	case err != nil:
		return sessionRoute{}, err
	}
	if otag := ownerTag(owner); otag != "" && otag != self && b.router.Alive(otag) {
		return sessionRoute{node: otag}, nil
	}
	return b.takeOver(ctx, clientID, owner, hops)
}

// takeOver decides whether and where the session clientID, whose record
// names owner (dead, released, or this node without the session), is
// adopted, and claims it when that is here.
//
// A dead owner's sessions are taken only from the quorum side, only once
// its failure is AdoptDelay old, and only once its lease is gone (it may
// be stalled, or cut off from gossip but not from the store: it stopped
// acting on them when its local deadline passed, before the lease
// expired). The adopter is chosen by rendezvous hashing over the live
// members, so that the survivors spread a dead node's sessions, unless
// the request already travelled (the sender chose this node); a draining
// node picks another. The claim's compare-and-set settles races: its
// loser forwards to the winner.
func (b *Broker) takeOver(ctx context.Context, clientID, owner string, hops int) (sessionRoute, error) {
	self, otag := b.cfg.IDPrefix, ownerTag(owner)
	draining := b.shuttingDown.Load()
	if otag != "" && otag != self {
		if !b.router.Quorum() {
			return sessionRoute{unavailable: true}, nil
		}
		if ago, recent := b.router.FailedFor(otag); recent && ago < b.router.AdoptDelay() {
			return sessionRoute{unavailable: true}, nil
		}
		if held, err := b.store.LeaseHeld(ctx, otag); err != nil || held {
			return sessionRoute{unavailable: true}, err
		}
	}
	if (draining || hops == 0) && otag != self {
		switch target := adopter(b.router.Live(), clientID, self, draining); target {
		case "":
			return sessionRoute{unavailable: true}, nil
		case self:
		default:
			return sessionRoute{node: target}, nil
		}
	}
	st, cur, err := b.store.Claim(ctx, clientID, owner)
	switch {
	case errors.Is(err, ErrNoRecord):
		return sessionRoute{}, nil
	case errors.Is(err, ErrClaimLost):
		if ctag := ownerTag(cur); ctag != self && b.router.Alive(ctag) {
			return sessionRoute{node: ctag}, nil
		}
		return sessionRoute{unavailable: true}, nil
	case errors.Is(err, ErrFenced):
		return sessionRoute{unavailable: true}, nil
	case err != nil:
		return sessionRoute{}, err
	}
	b.log.Info("claimed session", "session", clientID, "from", owner)
	return sessionRoute{adopt: st}, nil
}

// adopter picks the node that adopts clientID among the live members: the
// one with the highest rendezvous score (FNV-64 of id, 0, tag), self
// excluded when excludeSelf (it drains). Every node computes the same.
func adopter(live []string, clientID, self string, excludeSelf bool) string {
	best, bestScore := "", uint64(0)
	for _, tag := range live {
		if excludeSelf && tag == self {
			continue
		}
		h := fnv.New64a()
		_, _ = h.Write([]byte(clientID))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(tag))
		if s := h.Sum64(); best == "" || s > bestScore {
			best, bestScore = tag, s
		}
	}
	return best
}
