package broker

import (
	"context"
	"errors"
	"fmt"
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
	}
}

func (s *Session) takeReplayRequest() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.replayReq
	s.replayReq = nil
	return m
}

// invalidReplayID is the error of a replay id that history cannot serve,
// worded as Salesforce does so that its clients recognise it.
func invalidReplayID(ch string, id int64) *protocol.Error {
	return protocol.NewError(protocol.CodeBadRequest,
		"The replayId {"+strconv.FormatInt(id, 10)+"} you provided was invalid.  Please provide a valid ID, -2 to replay all events, or -1 to replay only new events.", ch)
}

// subscribeReplay subscribes s to the concrete channel ch and queues what
// history holds after replay id from (ReplayAll: everything retained),
// followed without gap or duplicate by the live publications. It returns
// the replay id the stream starts after. An id newer than the channel's
// head, or older than what history retains, is refused with 400 and the
// subscription is not made.
//
// On a channel the session already subscribes (a client resynchronising
// after a failed connect) the same happens: what is queued or
// unacknowledged on ch is replaced by history after from, so the stream
// stays in order; the client drops what it had already seen.
func (b *Broker) subscribeReplay(ctx context.Context, s *Session, ch string, from int64) (int64, *protocol.Error) {
	if channel.IsWildcard(ch) {
		return 0, protocol.NewError(protocol.CodeBadRequest, "Replay from an id is only supported on concrete channels; use -1 on wildcards", ch)
	}
	head, err := b.eng.Head(ctx, ch)
	if err != nil {
		return 0, protocol.NewError(protocol.CodeServerUnavailable, "Subscription failed: backplane unavailable", ch)
	}
	after := engine.Position{Epoch: head.Epoch}
	if from >= 0 {
		if uint64(from) > head.Offset {
			return 0, invalidReplayID(ch, from)
		}
		after.Offset = uint64(from)
	}
	perr := b.replayFrom(ctx, s, ch, from, after)
	return int64(after.Offset), perr
}

func (b *Broker) replayFrom(ctx context.Context, s *Session, ch string, from int64, after engine.Position) *protocol.Error {
	// An adopted session catches up first (normally its first connect does).
	if err := b.catchUp(ctx, s); err != nil {
		b.log.Warn("adopted session not caught up", "session", s.id, "err", err)
		return protocol.NewError(protocol.CodeServerUnavailable, "Session recovery pending: backplane unavailable", ch)
	}
	already := s.subscribed(ch)
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	if s.recovering {
		s.mu.Unlock()
		return protocol.NewError(protocol.CodeServerUnavailable, "Session recovering; subscribe again", ch)
	}
	s.recovering = true // live publications wait until history is queued
	s.mu.Unlock()
	var got []*engine.Publication
	fail := func(perr *protocol.Error) *protocol.Error {
		s.mu.Lock()
		s.finishRecoveryLocked(nil, nil)
		s.mu.Unlock()
		if perr != nil && !already {
			_ = b.idx.remove(ctx, s, ch)
		}
		return perr
	}
	if already {
		// nothing to subscribe
	} else if err := b.idx.add(ctx, s, ch); err != nil {
		b.log.Warn("replay subscribe failed", "session", s.id, "channel", ch, "err", err)
		return fail(protocol.NewError(protocol.CodeServerUnavailable, "Subscription failed: backplane unavailable", ch))
	}
	pos := after
	for {
		pubs, err := b.eng.History(ctx, ch, pos, b.cfg.MaxQueueMessages)
		if errors.Is(err, engine.ErrPositionGone) {
			return fail(invalidReplayID(ch, from))
		}
		if err != nil {
			return fail(protocol.NewError(protocol.CodeServerUnavailable, "Replay failed: backplane unavailable", ch))
		}
		for i := range pubs {
			got = append(got, &pubs[i])
		}
		if len(got) > b.cfg.MaxQueueMessages {
			return fail(protocol.NewError(protocol.CodeTooMany, fmt.Sprintf("Replay exceeds the session queue (%d messages)", b.cfg.MaxQueueMessages), ch))
		}
		if len(pubs) < b.cfg.MaxQueueMessages {
			break
		}
		last := pubs[len(pubs)-1]
		pos = engine.Position{Epoch: last.Epoch, Offset: last.Offset}
	}
	s.mu.Lock()
	if already {
		s.dropChannelLocked(ch)
	}
	if s.acked != nil {
		s.acked[ch] = after // adoption resumes from here until deliveries advance it
	}
	s.finishRecoveryLocked(map[string]engine.Position{ch: after}, got)
	s.mu.Unlock()
	return nil
}
