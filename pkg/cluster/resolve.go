package cluster

import (
	"context"
	"errors"
	"hash/fnv"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
)

// Resolve implements broker.Router: who serves a session this node does
// not hold.
//
//  1. The clientId's tag names the node that created the session. While
//     that node is alive it is asked first (no Redis round trip); it
//     forwards once more if the session moved.
//  2. Otherwise the session record in Redis names the owner: a live owner
//     gets the request.
//  3. A record whose owner is dead (or released by a draining node, or this
//     node without the session) is adopted: the adopter is chosen by
//     rendezvous hashing over the live, non-draining members so that the
//     survivors spread a dead node's sessions, and a compare-and-set on the
//     owner settles races. A node that sees no majority of the cluster (cut
//     off from gossip) never takes over from a dead owner, and nobody
//     takes over while the owner's lease (lease.go) is held.
func (c *Cluster) Resolve(ctx context.Context, clientID string, hops int) (broker.Route, error) {
	draining := c.b.ShuttingDown()
	if len(clientID) >= TagLen && hops == 0 && !draining {
		if tag := clientID[:TagLen]; tag != c.tag {
			if _, ok := c.mem.Alive(tag); ok {
				return broker.Route{Node: tag}, nil
			}
		}
	}
	store := c.cfg.Sessions
	if store == nil {
		return broker.Route{}, nil // sessions die with their owner: 402
	}
	owner, err := store.Owner(ctx, clientID)
	if errors.Is(err, errNoRecord) {
		return broker.Route{}, nil
	}
	if err != nil {
		return broker.Route{}, err
	}
	otag := ownerTag(owner)
	if otag != "" && otag != c.tag {
		if _, ok := c.mem.Alive(otag); ok {
			return broker.Route{Node: otag}, nil
		}
		// Take over from a failed owner only from the majority side, and
		// only once the failure is old enough that a node cut off from
		// everyone would by now see all its peers failed (and so no
		// majority): failure detection reaches each peer at a slightly
		// different time.
		if !c.mem.Quorum() {
			return broker.Route{Unavailable: true}, nil
		}
		if ago, recent := c.mem.FailedFor(otag); recent && ago < c.adoptDelay() {
			return broker.Route{Unavailable: true}, nil
		}
		// Fencing: a node that seems dead may only be stalled, or cut
		// off from gossip but not from Redis. Its sessions are taken
		// only once its lease is gone, when it has stopped acting on
		// them (its local deadline passed first).
		if held, err := store.LeaseHeld(ctx, otag); err != nil || held {
			return broker.Route{Unavailable: true}, err
		}
	}
	// Adoptable. Spread the adopters, unless the request already travelled
	// (then this node takes it: the sender chose it).
	if (draining || hops == 0) && otag != c.tag {
		target := c.adopter(clientID, draining)
		switch {
		case target == "":
			return broker.Route{Unavailable: true}, nil
		case target != c.tag:
			return broker.Route{Node: target}, nil
		}
	}
	st, cur, err := store.Claim(ctx, clientID, owner)
	switch {
	case errors.Is(err, errNoRecord):
		return broker.Route{}, nil
	case errors.Is(err, errClaimLost):
		if ctag := ownerTag(cur); ctag != c.tag {
			if _, ok := c.mem.Alive(ctag); ok {
				return broker.Route{Node: ctag}, nil
			}
		}
		return broker.Route{Unavailable: true}, nil
	case errors.Is(err, broker.ErrFenced):
		return broker.Route{Unavailable: true}, nil
	case err != nil:
		return broker.Route{}, err
	}
	c.log.Info("claimed session", "session", clientID, "from", owner)
	return broker.Route{Adopt: st}, nil
}

// adoptDelay is how long after an owner's failure its sessions may be
// taken over (see Resolve).
func (c *Cluster) adoptDelay() time.Duration {
	if c.cfg.FastGossip {
		return time.Second
	}
	return 5 * time.Second
}

// adopter picks the node that adopts clientID: the live member with the
// highest rendezvous score (this node excluded when it drains).
func (c *Cluster) adopter(clientID string, excludeSelf bool) string {
	best, bestScore := "", uint64(0)
	for _, m := range c.mem.Members() {
		if excludeSelf && m.Tag == c.tag {
			continue
		}
		h := fnv.New64a()
		_, _ = h.Write([]byte(clientID))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(m.Tag))
		if s := h.Sum64(); best == "" || s > bestScore {
			best, bestScore = m.Tag, s
		}
	}
	return best
}
