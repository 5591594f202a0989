package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// Replay ids (Salesforce-compatible): a publication's replay id is its
// offset on its channel. In a subscribe, -1 asks for new events only, -2
// for everything retained, and an id for everything after it.
const (
	ReplayNew = -1
	ReplayAll = -2
)

// SetReplayRequest records the replay ids of the subscribe being processed
// (ext.replay: channel -> id). The broker consumes the entries of the
// channels that subscribe names, then forgets the rest.
func (s *Session) SetReplayRequest(ids map[string]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replayReq = ids
}

// dropChannelLocked removes ch's publications from the queue and the
// unacknowledged batches (a replay resynchronisation re-sends them from
// history). s.mu is held.
func (s *Session) dropChannelLocked(ch string) {
	keep := func(pubs []*engine.Publication) []*engine.Publication {
		out := pubs[:0]
		for _, p := range pubs {
			if p.Channel == ch {
				s.queueBytes -= len(p.Payload)
				continue
			}
			out = append(out, p)
		}
		return out
	}
	s.queue = keep(s.queue)
	for i := range s.unacked {
		s.unacked[i].pubs = keep(s.unacked[i].pubs)
		delete(s.unacked[i].end, ch) // acknowledging it must not move ch past the replay point
	}
}

func (s *Session) takeReplayRequest() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.replayReq
	s.replayReq = nil
	return m
}

// InvalidReplayID is the error of a replay id that history cannot serve,
// worded exactly as Salesforce words it ("400::The replayId {ID} you
// provided was invalid. ..."), so that its clients recognise it.
func InvalidReplayID(id int64) *protocol.Error {
	return protocol.NewError(protocol.CodeBadRequest,
		"The replayId {"+strconv.FormatInt(id, 10)+"} you provided was invalid. Please provide a valid ID, -2 to replay all events, or -1 to replay only new events.")
}

// subscribeReplay subscribes s to sub (a channel or a wildcard pattern)
// and queues what history holds after the requested replay ids, followed
// without gap or duplicate by the live publications. req is the subscribe's
// ext.replay: for a concrete channel its own entry (-2: everything
// retained; an id: everything after it); for a wildcard, the pattern's
// entry (-1: new only, -2: everything retained on every matching channel)
// and optional entries for concrete channels under it (resume each after
// its id). It returns, per concrete channel, the replay id its stream
// starts after. An id newer than the channel's head, or older than what
// history retains, is refused with 400 and the subscription is not made.
//
// On a pattern the session already subscribes (a client resynchronising
// after a failed connect) the same happens: what is queued or
// unacknowledged on the replayed channels is replaced by history, so each
// stream stays in order; the client drops what it had already seen.
func (b *Broker) subscribeReplay(ctx context.Context, s *Session, sub string, req map[string]int64) (map[string]int64, *protocol.Error) {
	from := map[string]int64{} // concrete channel -> requested id (-2 all)
	if !channel.IsWildcard(sub) {
		from[sub] = req[sub]
	} else {
		all := req[sub] == ReplayAll
		if v, ok := req[sub]; ok && v >= 0 {
			return nil, protocol.NewError(protocol.CodeBadRequest, "On a wildcard channel use -1 or -2, with the ids of its channels as their own entries", sub)
		}
		for ch, id := range req {
			if !channel.IsWildcard(ch) && channel.Match(sub, ch) && id != ReplayNew {
				from[ch] = id
			}
		}
		if all {
			chans, err := b.eng.Channels(ctx, sub)
			if err != nil {
				return nil, protocol.NewError(protocol.CodeServerUnavailable, "Subscription failed: backplane unavailable", sub)
			}
			for _, ch := range chans {
				if _, ok := from[ch]; !ok {
					from[ch] = ReplayAll
				}
			}
		}
	}
	starts := make(map[string]engine.Position, len(from))
	for ch, id := range from {
		head, err := b.eng.Head(ctx, ch)
		if err != nil {
			return nil, protocol.NewError(protocol.CodeServerUnavailable, "Subscription failed: backplane unavailable", ch)
		}
		after := engine.Position{Epoch: head.Epoch}
		if id == ReplayAll {
			after = engine.Retained
		}
		if id >= 0 {
			if uint64(id) > head.Offset {
				return nil, InvalidReplayID(id)
			}
			after.Offset = uint64(id)
		}
		starts[ch] = after
	}
	if perr := b.replayInto(ctx, s, sub, starts, from); perr != nil {
		return nil, perr
	}
	out := make(map[string]int64, len(starts))
	for ch, pos := range starts {
		out[ch] = int64(pos.Offset)
	}
	return out, nil
}

// replayInto subscribes s to sub (unless it already is) and queues the
// history of each channel after its start position, then the live
// publications that arrived meanwhile (section 12 of the architecture).
func (b *Broker) replayInto(ctx context.Context, s *Session, sub string, starts map[string]engine.Position, ids map[string]int64) *protocol.Error {
	// An adopted session catches up first (normally its first connect does).
	if err := b.catchUp(ctx, s); err != nil {
		b.log.Warn("adopted session not caught up", "session", s.id, "err", err)
		return protocol.NewError(protocol.CodeServerUnavailable, "Session recovery pending: backplane unavailable", sub)
	}
	already := s.subscribed(sub)
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	if s.recovering {
		s.mu.Unlock()
		return protocol.NewError(protocol.CodeServerUnavailable, "Session recovering; subscribe again", sub)
	}
	s.recovering = true // live publications wait until history is queued
	s.mu.Unlock()
	fail := func(perr *protocol.Error) *protocol.Error {
		s.mu.Lock()
		s.finishRecoveryLocked(nil, nil)
		s.mu.Unlock()
		if !already {
			_ = b.idx.remove(ctx, s, sub)
		}
		return perr
	}
	if !already {
		if err := b.idx.add(ctx, s, sub); err != nil {
			b.log.Warn("replay subscribe failed", "session", s.id, "channel", sub, "err", err)
			return fail(protocol.NewError(protocol.CodeServerUnavailable, "Subscription failed: backplane unavailable", sub))
		}
	}
	var got []*engine.Publication
	for _, ch := range slices.Sorted(maps.Keys(starts)) {
		var err error
		got, err = b.historyInto(ctx, got, ch, starts[ch])
		switch {
		case errors.Is(err, engine.ErrPositionGone):
			return fail(InvalidReplayID(ids[ch]))
		case errors.Is(err, errHistoryTooLong):
			return fail(protocol.NewError(protocol.CodeTooMany, fmt.Sprintf("Replay exceeds the session queue (%d messages)", b.cfg.MaxQueueMessages), ch))
		case err != nil:
			return fail(protocol.NewError(protocol.CodeServerUnavailable, "Replay failed: backplane unavailable", ch))
		}
	}
	// Where each stream starts, for adoption: "everything retained" began
	// just before its oldest publication (or at the head if none).
	resume := maps.Clone(starts)
	for _, p := range got {
		if resume[p.Channel] == engine.Retained {
			resume[p.Channel] = engine.Position{Epoch: p.Epoch, Offset: p.Offset - 1}
		}
	}
	for ch, pos := range resume {
		if pos == engine.Retained {
			head, err := b.eng.Head(ctx, ch)
			if err != nil {
				return fail(protocol.NewError(protocol.CodeServerUnavailable, "Replay failed: backplane unavailable", ch))
			}
			resume[ch] = head
		}
	}
	s.mu.Lock()
	for ch, after := range resume {
		if already {
			s.dropChannelLocked(ch)
		}
		if s.acked != nil {
			s.acked[ch] = after // adoption resumes from here until deliveries advance it
		}
	}
	s.finishRecoveryLocked(starts, got)
	s.mu.Unlock()
	return nil
}

// wantsReplay reports whether ext.replay asks for history on sub: an id or
// -2 for the channel itself, or (wildcard) -2 for the pattern or an id for
// a channel under it.
func wantsReplay(req map[string]int64, sub string) bool {
	if v, ok := req[sub]; ok && v != ReplayNew {
		return true
	}
	if !channel.IsWildcard(sub) {
		return false
	}
	for ch, id := range req {
		if id != ReplayNew && !channel.IsWildcard(ch) && channel.Match(sub, ch) {
			return true
		}
	}
	return false
}
