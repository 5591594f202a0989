package cluster

import (
	"context"
	"time"
)

// departedMemory is how long a node that failed still counts towards the
// cluster size in Quorum, and how long this node keeps trying to reach it
// again (a partition that heals).
const departedMemory = 2 * time.Minute

// departure is a node that failed (not one that left on purpose).
type departure struct {
	at   time.Time
	addr string // its gossip address
}

// noteDepartedLocked records that tag failed; m.mu is held.
func (m *Membership) noteDepartedLocked(tag, addr string) {
	now := time.Now()
	m.departed[tag] = departure{at: now, addr: addr}
	for t, d := range m.departed {
		if now.Sub(d.at) > departedMemory {
			delete(m.departed, t)
		}
	}
}

// Quorum reports whether this node sees at least half of the nodes it
// knew recently (the live ones plus those that failed within
// departedMemory; drained nodes do not count). A node cut off from gossip
// sees itself alone and must not take over its peers' sessions; the
// majority side does. Half (not a strict majority) lets the survivor of a
// two-node cluster adopt; an even split then has both halves adopting,
// which the owner compare-and-set keeps correct, at the cost of sessions
// moving back and forth until the partition heals.
func (m *Membership) Quorum() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	recent := 0
	now := time.Now()
	for _, d := range m.departed {
		if now.Sub(d.at) <= departedMemory {
			recent++
		}
	}
	return 2*len(m.byTag) >= len(m.byTag)+recent
}

// Reconnect tries, every interval until ctx ends, to rejoin the nodes that
// failed recently: memberlist does not probe dead nodes, so without this
// two sides of a healed partition would stay apart.
func (m *Membership) Reconnect(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var addrs []string
		now := time.Now()
		m.mu.RLock()
		for _, d := range m.departed {
			if now.Sub(d.at) <= departedMemory && d.addr != "" {
				addrs = append(addrs, d.addr)
			}
		}
		m.mu.RUnlock()
		if len(addrs) == 0 {
			continue
		}
		if n, err := m.ml.Join(addrs); n > 0 {
			m.log.Info("gossip: reached failed nodes again", "contacted", n)
		} else {
			m.log.Debug("gossip: failed nodes still unreachable", "nodes", len(addrs), "err", err)
		}
	}
}

// FailedFor reports how long ago tag was declared failed, and whether it
// is among the recent failures (a node that left on purpose, or failed
// longer than departedMemory ago, is not).
func (m *Membership) FailedFor(tag string) (time.Duration, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	d, ok := m.departed[tag]
	if !ok {
		return 0, false
	}
	return time.Since(d.at), true
}
