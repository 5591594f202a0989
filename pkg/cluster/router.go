package cluster

import (
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
)

// router is the broker.Router this node installs: the node-to-node calls
// (Cluster.Forward, Cluster.SessionOp) and the membership facts the
// broker's adoption decides by (broker.Members). Who serves a session a
// node does not hold, and when its record may be taken over, is decided
// in the broker (pkg/broker/adopt.go); this package only answers, from
// memory.
type router struct{ *Cluster }

var _ broker.Router = router{}

// Creator implements broker.Members: a clientId that is not a node tag
// plus broker.ClientIDRandomLen characters of the tag alphabet
// (ParseClientID) is one no node issued, answered as unknown (402) at
// once, without a Redis look-up or a forward to the node its first
// characters happen to name.
func (r router) Creator(clientID string) (string, bool) { return ParseClientID(clientID) }

// Alive implements broker.Members.
func (r router) Alive(tag string) bool {
	_, ok := r.mem.Alive(tag)
	return ok
}

// Live implements broker.Members.
func (r router) Live() []string {
	members := r.mem.Members()
	tags := make([]string, len(members))
	for i, m := range members {
		tags[i] = m.Tag
	}
	return tags
}

// Quorum implements broker.Members (Membership.Quorum).
func (r router) Quorum() bool { return r.mem.Quorum() }

// FailedFor implements broker.Members (Membership.FailedFor).
func (r router) FailedFor(tag string) (time.Duration, bool) { return r.mem.FailedFor(tag) }

// AdoptDelay implements broker.Members: 1 s with fast gossip timers, 5 s
// with the default ones.
func (r router) AdoptDelay() time.Duration { return adoptDelay(r.cfg.FastGossip) }

// adoptDelay is how long after an owner's failure its sessions may be
// taken over (broker.Members.AdoptDelay).
func adoptDelay(fast bool) time.Duration {
	if fast {
		return time.Second
	}
	return 5 * time.Second
}
