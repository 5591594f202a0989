package broker

import (
	"context"
	"fmt"
	"sync"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

// subIndex maps subscription patterns to the local sessions subscribed to
// them, and keeps the engine subscribed to exactly the patterns in use.
//
// Every pattern present in m is subscribed in the engine. opMu serializes
// engine Subscribe/Unsubscribe calls (rare: only the first subscriber and the
// last unsubscriber of a pattern make them) so they never reorder; mu guards m
// and is held only for map work, never across an engine call.
type subIndex struct {
	eng  engine.Engine
	opMu sync.Mutex
	mu   sync.RWMutex
	m    map[string]map[*Session]struct{}
	kbs  sync.Pool // *kickBatch, reused across fanouts
	bkbs sync.Pool // *kickBatch with its seen set, reused across fanoutBatch calls
}

func newSubIndex(eng engine.Engine) *subIndex {
	return &subIndex{eng: eng, m: map[string]map[*Session]struct{}{}}
}

// add subscribes s to pattern; it returns once the engine delivers the
// pattern to this node.
func (x *subIndex) add(ctx context.Context, s *Session, pattern string) error {
	if x.addExisting(s, pattern) {
		return nil
	}
	x.opMu.Lock()
	defer x.opMu.Unlock()
	if x.addExisting(s, pattern) {
		return nil
	}
	if err := x.eng.Subscribe(ctx, pattern); err != nil {
		return fmt.Errorf("engine subscribe %s: %w", pattern, err)
	}
	x.mu.Lock()
	x.m[pattern] = map[*Session]struct{}{s: {}}
	s.setSub(pattern, true)
	x.mu.Unlock()
	return nil
}

// addExisting adds s to an existing pattern set. The session's own
// subscription set changes under mu together with the index, so fanout's
// duplicate check always sees both consistent.
func (x *subIndex) addExisting(s *Session, pattern string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	set := x.m[pattern]
	if set == nil {
		return false
	}
	set[s] = struct{}{}
	s.setSub(pattern, true)
	return true
}

// remove unsubscribes s from pattern, releasing the engine subscription when
// it was the last local subscriber.
func (x *subIndex) remove(ctx context.Context, s *Session, pattern string) error {
	x.mu.Lock()
	set := x.m[pattern]
	if set == nil {
		s.setSub(pattern, false)
		x.mu.Unlock()
		return nil
	}
	delete(set, s)
	s.setSub(pattern, false)
	empty := len(set) == 0
	x.mu.Unlock()
	if !empty {
		return nil
	}
	x.opMu.Lock()
	defer x.opMu.Unlock()
	x.mu.Lock()
	if set := x.m[pattern]; set == nil || len(set) > 0 {
		x.mu.Unlock()
		return nil
	}
	delete(x.m, pattern)
	x.mu.Unlock()
	if err := x.eng.Unsubscribe(ctx, pattern); err != nil {
		return fmt.Errorf("engine unsubscribe %s: %w", pattern, err)
	}
	return nil
}

// fanout enqueues p to every local session subscribed to a pattern matching
// its channel, once per session: patterns are visited in Candidates order and
// a session also subscribed to an earlier matching pattern is skipped.
// It returns the number of sessions reached.
// Sessions with the replay extension get replayed(p), made once per call.
// Their writers are woken once the index lock is released (kickBatch).
func (x *subIndex) fanout(p *engine.Publication, replayed func(*engine.Publication) *engine.Publication) int {
	var buf [channel.MaxDepth + 2]string
	cands := channel.Candidates(buf[:0], p.Channel)
	n := 0
	kb, _ := x.kbs.Get().(*kickBatch)
	if kb == nil {
		kb = &kickBatch{}
	}
	func() {
		x.mu.RLock()
		defer x.mu.RUnlock()
		n = x.enqueueAll(cands, p, replayed, kb)
	}()
	kb.run() // outside the lock: it may write to sockets
	if cap(kb.ks) <= 1024 {
		x.kbs.Put(kb)
	}
	return n
}

// fanoutBatch is fanout for each of ps, in order, under one read lock,
// with one wake-up per writer for the whole batch: a websocket that
// receives several of the publications gets them in one frame (one
// write(2)), a held connect is answered once with all of them. It returns
// the number of deliveries.
func (x *subIndex) fanoutBatch(ps []*engine.Publication, replayed func(*engine.Publication) *engine.Publication) int {
	var buf [channel.MaxDepth + 2]string
	kb, _ := x.bkbs.Get().(*kickBatch)
	if kb == nil {
		kb = &kickBatch{seen: map[kicker]struct{}{}}
	}
	n := 0
	func() {
		x.mu.RLock()
		defer x.mu.RUnlock()
		for _, p := range ps {
			n += x.enqueueAll(channel.Candidates(buf[:0], p.Channel), p, replayed, kb)
		}
	}()
	big := len(kb.ks) > 1024
	kb.run() // outside the lock: it may write to sockets
	if !big {
		x.bkbs.Put(kb)
	}
	return n
}

// enqueueAll is fanout's work under the read lock.
func (x *subIndex) enqueueAll(cands []string, p *engine.Publication, replayed func(*engine.Publication) *engine.Publication, kb *kickBatch) int {
	var rp *engine.Publication
	n := 0
	for i, pat := range cands {
		set := x.m[pat]
		for s := range set {
			if i > 0 && s.subscribedToAny(cands[:i]) {
				continue
			}
			if s.replay.Load() {
				if rp == nil {
					rp = replayed(p)
				}
				s.enqueueTo(rp, kb)
			} else {
				s.enqueueTo(p, kb)
			}
			n++
		}
	}
	return n
}

// patterns returns the number of patterns in use.
func (x *subIndex) patterns() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.m)
}

// affected returns the sessions that may miss publications on ch: for a
// concrete channel, every session subscribed to a matching pattern; for a
// wildcard pattern, the sessions subscribed to exactly that pattern.
func (x *subIndex) affected(ch string) []*Session {
	var buf [channel.MaxDepth + 2]string
	patterns := []string{ch}
	if !channel.IsWildcard(ch) {
		patterns = channel.Candidates(buf[:0], ch)
	}
	seen := map[*Session]bool{}
	var out []*Session
	x.mu.RLock()
	defer x.mu.RUnlock()
	for _, p := range patterns {
		for s := range x.m[p] {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return out
}
