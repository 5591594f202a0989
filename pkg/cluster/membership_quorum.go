package cluster

import "time"

// departedMemory is how long a node that left or died still counts towards
// the cluster size in Quorum.
const departedMemory = 2 * time.Minute

// noteDepartedLocked records that tag left; m.mu is held.
func (m *Membership) noteDepartedLocked(tag string) {
	now := time.Now()
	m.departed[tag] = now
	for t, at := range m.departed {
		if now.Sub(at) > departedMemory {
			delete(m.departed, t)
		}
	}
}

// Quorum reports whether this node sees a strict majority of the nodes it
// knew recently (the live ones plus those that left or died within
// departedMemory). A node cut off from gossip sees itself alone and must
// not take over its peers' sessions; the majority side does.
func (m *Membership) Quorum() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	recent := 0
	now := time.Now()
	for _, at := range m.departed {
		if now.Sub(at) <= departedMemory {
			recent++
		}
	}
	return 2*len(m.byTag) > len(m.byTag)+recent
}
