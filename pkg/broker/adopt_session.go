package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// This file recreates a session this node claimed (adopt.go) and catches
// its client up: the session's subscriptions, its positions, the replay of
// what the client has not acknowledged (or received) from history, and
// the in-band 410 when that cannot be known or found.

// adopt recreates the session st (claimed for this node by resolve) and
// subscribes it. A session with positions starts recovering: its first
// /meta/connect replays from history what the client has not acknowledged.
func (b *Broker) adopt(ctx context.Context, st *SessionState) (*Session, error) {
	if b.shuttingDown.Load() {
		return nil, ErrNotAdopted
	}
	now := time.Now()
	s := &Session{
		id: st.ID, b: b, created: now, browserID: st.BrowserID,
		info: RequestInfo{Transport: st.Transport}, lastActive: now, transport: st.Transport,
		connected: true, lastBatch: st.LastBatch, durable: maps.Clone(st.Durable),
		acked: maps.Clone(st.Acked), sameIDRetry: st.SameIDRetry, arrived: now,
	}
	if s.acked == nil {
		s.acked = map[string]engine.Position{}
	}
	empty := map[string]struct{}{}
	s.subs.Store(&empty)
	s.replay.Store(st.Replay)
	s.seq.Resume(st.Seen, st.Base36)
	s.ack = st.reliable()
	s.implicit = st.Replay && !st.Ack
	for _, bs := range st.Batches {
		s.unacked = append(s.unacked, ackBatch{id: bs.ID, end: maps.Clone(bs.End), connect: bs.Connect})
	}
	s.recovering = len(s.acked) > 0 || len(s.unacked) > 0
	s.adoptedGap = !st.reliable() && !st.Exact && len(st.Subs) > 0
	s.staleExact = st.Exact && !st.reliable()

	if cur, added := b.sessions.add(s); !added {
		return cur, nil // adopted concurrently by another request
	}
	s.browserLease, _ = b.lim.browserSessions.acquire(s.browserID, 0) // counted, never refused
	b.obs.SessionOpened(s.transport)
	b.obs.SessionAdopted()
	b.metrics.adopted.Add(1)
	for _, p := range st.Subs {
		if err := b.idx.add(ctx, s, p); err != nil {
			// The record stays claimed by this node: the next request
			// adopts it again (the session is not kept half subscribed).
			b.removeSession(s, errMoved)
			return nil, fmt.Errorf("adopt %s: subscribe %s: %w", s.id, p, err)
		}
	}
	b.log.Info("session adopted", "session", s.id, "subscriptions", len(st.Subs), "recovering", s.recovering)
	return s, nil
}

// catchUp replays, once, what an adopted session's client has not
// acknowledged (or received) from the channels' history, then the live
// publications that arrived meanwhile, without duplicates. An unrecoverable
// gap (history trimmed, Redis data lost) ends the session with 410.
func (b *Broker) catchUp(ctx context.Context, s *Session) error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	if !s.recovering {
		s.mu.Unlock()
		return nil
	}
	// Batches the client did not acknowledge are replayed from history.
	for _, bs := range s.unacked {
		if len(bs.pubs) == 0 {
			continue
		}
		s.mu.Unlock()
		return fmt.Errorf("catch up %s: live batch before recovery", s.id)
	}
	s.unacked = nil
	start := maps.Clone(s.acked)
	s.mu.Unlock()

	var got []*engine.Publication
	for _, ch := range slices.Sorted(maps.Keys(start)) {
		if !s.matches(ch) {
			continue
		}
		var err error
		got, err = b.historyInto(ctx, got, ch, start[ch])
		switch {
		case errors.Is(err, engine.ErrPositionGone):
			b.lostMessages(s, ch)
			return nil
		case errors.Is(err, errHistoryTooLong):
			s.mu.Lock()
			s.closeLocked(protocol.NewError(protocol.CodeQueueOverflow, "Session queue overflow", s.id))
			s.mu.Unlock()
			b.reap(s)
			return nil
		case err != nil:
			return fmt.Errorf("catch up %s on %s: %w", s.id, ch, err)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.finishRecoveryLocked(start, got)
	return nil
}

// finishRecoveryLocked ends recovery: got (history after the positions in
// start, oldest first per channel) is queued, then the live publications
// that waited in pending, minus those the client already has (at or
// before start) or history covered. s.mu is held.
func (s *Session) finishRecoveryLocked(start map[string]engine.Position, got []*engine.Publication) {
	s.recovering = false
	if s.closed != nil {
		return
	}
	last := maps.Clone(start)
	if last == nil {
		last = map[string]engine.Position{}
	}
	replay := s.replay.Load()
	for _, p := range got {
		if replay {
			p = withReplayID(p)
		}
		s.queue = append(s.queue, p)
		s.queueBytes += len(p.Payload)
		last[p.Channel] = engine.Position{Epoch: p.Epoch, Offset: p.Offset}
	}
	for _, p := range s.pending {
		if l, ok := last[p.Channel]; ok && l.Epoch == p.Epoch && p.Offset <= l.Offset {
			s.queueBytes -= len(p.Payload)
			continue
		}
		s.queue = append(s.queue, p)
	}
	s.pending = nil
	for ch, pos := range last {
		if pos.Epoch == "" || pos == engine.Retained {
			continue
		}
		if s.floor == nil {
			s.floor = map[string]engine.Position{}
		}
		s.floor[ch] = pos
	}
	if s.waiter != nil && len(s.queue) > 0 {
		s.waiter.wakeLocked()
	}
	if s.push != nil && len(s.queue) > 0 {
		s.push.kick()
	}
}

// errHistoryTooLong: what history holds after a position exceeds a
// session's queue (MaxQueueMessages).
var errHistoryTooLong = errors.New("broker: history longer than the session queue")

// historyInto appends to got what history holds on ch after pos, paging
// through the engine, up to MaxQueueMessages in all (errHistoryTooLong
// beyond). Engine errors (ErrPositionGone included) are returned wrapped.
func (b *Broker) historyInto(ctx context.Context, got []*engine.Publication, ch string, pos engine.Position) ([]*engine.Publication, error) {
	limit := b.cfg.MaxQueueMessages
	for {
		pubs, err := b.eng.History(ctx, ch, pos, limit)
		if err != nil {
			return got, fmt.Errorf("history of %s: %w", ch, err)
		}
		for i := range pubs {
			got = append(got, &pubs[i])
		}
		if len(got) > limit {
			return got, errHistoryTooLong
		}
		if len(pubs) < limit {
			return got, nil
		}
		last := pubs[len(pubs)-1]
		pos = engine.Position{Epoch: last.Epoch, Offset: last.Offset}
	}
}

// matches reports whether a publication on ch reaches the session's
// current subscriptions.
func (s *Session) matches(ch string) bool {
	var buf [channel.MaxDepth + 2]string
	return s.subscribedToAny(channel.Candidates(buf[:0], ch))
}

// lostMessages ends s because messages on ch it has not received can no
// longer be recovered: the client is told in-band (410, handshake advice)
// and the gap metric counts it.
func (b *Broker) lostMessages(s *Session, ch string) {
	b.metrics.gaps.Add(1)
	b.obs.Gap()
	b.log.Warn("unrecoverable gap for adopted session", "session", s.id, "channel", ch)
	s.mu.Lock()
	s.closeLocked(protocol.NewError(protocol.CodeMessagesLost, "Messages lost; handshake again", ch))
	s.mu.Unlock()
	b.reap(s)
}

// errAdoptedGap ends a plain session adopted after its owner failed (see
// Session.adoptedGap).
var errAdoptedGap = protocol.NewError(protocol.CodeMessagesLost, "Messages may have been lost: the session's node failed; handshake again")

// adoptionGap ends s, a plain session with subscriptions adopted after its
// owner failed, at its first /meta/connect here, if it has not ended yet:
// messages published between the failure and the adoption were not
// delivered and cannot be found (a plain session's record holds no
// positions), so the client is told in-band (410, handshake advice) rather
// than left with a silent gap. It reports whether it ended s.
func (b *Broker) adoptionGap(s *Session) bool {
	s.mu.Lock()
	gap := s.adoptedGap && s.closed == nil
	s.adoptedGap = false
	if gap {
		s.closeLocked(errAdoptedGap)
	}
	s.mu.Unlock()
	if !gap {
		return false
	}
	b.metrics.gaps.Add(1)
	b.obs.Gap()
	b.log.Info("plain session adopted after its node failed: told it may have missed messages", "session", s.id)
	b.reap(s)
	return true
}

// rewriteExact rewrites, once, the record of a plain session adopted from
// an exact record (Session.staleExact), after its catch-up and before it
// delivers here.
func (b *Broker) rewriteExact(ctx context.Context, s *Session) {
	s.mu.Lock()
	stale := s.staleExact
	s.staleExact = false
	s.mu.Unlock()
	if !stale {
		return
	}
	if err := b.save(ctx, s); err != nil {
		b.log.Warn("adopted session: record not rewritten", "session", s.id, "err", err)
	}
}
