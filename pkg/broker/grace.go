package broker

import "time"

// Expiry grace after the loss of a peer.
//
// When a node dies or leaves, the balancer in front of the cluster keeps
// sending it a share of every client's requests until it (or the client)
// gives up; nginx with max_fails=0 never does. Those requests fail (502),
// and clients back off after each failure: CometD waits one second more
// after each consecutive failure (1 s, 2 s, 3 s, ...), Faye retries every
// second. A client of a healthy node whose requests land on the dead node
// several times in a row may then send no /meta/connect to its session's
// owner for longer than MaxInterval, and its session (and what is queued
// for it) would expire although nothing is wrong with the client or its
// node.
//
// So a session whose client went quiet around a peer loss (its last
// connect at most MaxInterval before the loss, or at most PeerLossGrace
// after it) expires only after MaxInterval + PeerLossGrace without a
// connect. With the defaults (10 s + 60 s) a CometD client survives 11
// consecutive failed requests (1+2+...+11 = 66 s of back-off); with a
// dead third of a round-robin balancer that is a streak of probability
// (1/3)^11 (about 6e-6). Clients that are really gone linger that much
// longer, within the bounds of their queues. Other sessions expire on
// time.

// PeerLost tells the broker that a peer left the cluster (failed or
// drained) at now. Safe for concurrent use.
func (b *Broker) PeerLost(now time.Time) {
	t := now.UnixNano()
	for {
		cur := b.peerLostAt.Load()
		if cur >= t || b.peerLostAt.CompareAndSwap(cur, t) {
			return
		}
	}
}

// expiryInterval is how long a session last active at lastActive lives
// without a connect.
func (b *Broker) expiryInterval(lastActive time.Time) time.Duration {
	if lost := b.peerLostAt.Load(); lost != 0 && b.cfg.PeerLossGrace > 0 {
		at := time.Unix(0, lost)
		if lastActive.After(at.Add(-b.cfg.MaxInterval)) && lastActive.Before(at.Add(b.cfg.PeerLossGrace)) {
			return b.cfg.MaxInterval + b.cfg.PeerLossGrace
		}
	}
	return b.cfg.MaxInterval
}
