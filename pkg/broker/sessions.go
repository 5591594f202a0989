package broker

import (
	"sync"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// sessionTable holds the node's sessions, the sessions waiting to be
// reaped, and the tombstones of sessions that ended recently. Each part
// has its own lock; none is held while another is taken, and none while
// a Session's lock is taken (callers snapshot, then work on sessions).
type sessionTable struct {
	mu   sync.RWMutex
	byID map[string]*Session

	reapMu  sync.Mutex
	reaping []*Session // closed from a fan-out (index locks held): removed by the sweeper

	// tombs keeps, for one MaxInterval, why a session ended when the
	// client must learn it (410 gap, 409 overflow, disconnect) even if it
	// was not holding a connect at the time: its next request gets that
	// error instead of a bare 402.
	tombsMu sync.Mutex
	tombs   map[string]tomb
}

// tomb is why a session ended, kept for its client's next request.
type tomb struct {
	reason *protocol.Error
	at     time.Time
}

func newSessionTable() *sessionTable {
	return &sessionTable{byID: map[string]*Session{}, tombs: map[string]tomb{}}
}

func (t *sessionTable) get(id string) (*Session, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s, ok := t.byID[id]
	return s, ok
}

// add inserts s unless a session with its id is there: it returns the
// session in the table and whether it is s.
func (t *sessionTable) add(s *Session) (*Session, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur, ok := t.byID[s.id]; ok {
		return cur, false
	}
	t.byID[s.id] = s
	return s, true
}

// remove deletes s (not another session with its id); it reports whether
// s was there.
func (t *sessionTable) remove(s *Session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID[s.id] != s {
		return false
	}
	delete(t.byID, s.id)
	return true
}

func (t *sessionTable) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byID)
}

// snapshot returns every session, for work done outside the table's lock.
func (t *sessionTable) snapshot() []*Session {
	t.mu.RLock()
	defer t.mu.RUnlock()
	all := make([]*Session, 0, len(t.byID))
	for _, s := range t.byID {
		all = append(all, s)
	}
	return all
}

// ids returns every session id.
func (t *sessionTable) ids() []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	ids := make([]string, 0, len(t.byID))
	for id := range t.byID {
		ids = append(ids, id)
	}
	return ids
}

// reap schedules s, closed where index locks are held, for removal.
func (t *sessionTable) reap(s *Session) {
	t.reapMu.Lock()
	t.reaping = append(t.reaping, s)
	t.reapMu.Unlock()
}

// takeReaped returns the sessions scheduled by reap since the last call.
func (t *sessionTable) takeReaped() []*Session {
	t.reapMu.Lock()
	defer t.reapMu.Unlock()
	r := t.reaping
	t.reaping = nil
	return r
}

// bury keeps why session id ended, for its client's next request.
func (t *sessionTable) bury(id string, reason *protocol.Error, now time.Time) {
	t.tombsMu.Lock()
	t.tombs[id] = tomb{reason: reason, at: now}
	t.tombsMu.Unlock()
}

// tombstone returns why session id ended here recently, if it must be told.
func (t *sessionTable) tombstone(id string) *protocol.Error {
	t.tombsMu.Lock()
	defer t.tombsMu.Unlock()
	if tb, ok := t.tombs[id]; ok {
		return tb.reason
	}
	return nil
}

// forget drops the tombstones older than maxAge.
func (t *sessionTable) forget(now time.Time, maxAge time.Duration) {
	t.tombsMu.Lock()
	defer t.tombsMu.Unlock()
	for id, tb := range t.tombs {
		if now.Sub(tb.at) > maxAge {
			delete(t.tombs, id)
		}
	}
}
