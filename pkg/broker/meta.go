package broker

import (
	"errors"
	"time"

	"context"
	"maps"
	"strconv"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// errDisconnected is the close reason of a session that disconnected. Its
// held connect is answered like any other ended session's (402 with
// reconnect "handshake"): a disconnect sent from another connection (a
// second tab, an admin tool) must make the client handshake again, and a
// client that disconnected itself ignores the advice (CometD and Faye do).
var errDisconnected = protocol.NewError(protocol.CodeUnknownClient, "Disconnected")

// subscribe handles /meta/subscribe (on) and /meta/unsubscribe (!on). It is
// all or nothing: every name is validated and authorized before any takes
// effect.
func (b *Broker) subscribe(ctx context.Context, s *Session, m *protocol.Message, on bool) *protocol.Reply {
	if on {
		b.obs.Subscribe()
	}
	r := protocol.ReplyTo(m)
	r.ClientID = s.id
	if len(m.Subscription.Names) == 0 {
		r.Fail(protocol.NewError(protocol.CodeBadRequest, "Missing subscription"))
		return r
	}
	sub := m.Subscription
	r.Subscription = &sub
	replayReq := s.takeReplayRequest()
	broadcast, perr := b.subscribable(ctx, s, m, on)
	if perr != nil {
		r.Fail(perr)
		return r
	}
	if on && s.subCount()+len(broadcast) > b.cfg.MaxSubscriptions {
		r.Fail(protocol.NewError(protocol.CodeTooMany, "Too many subscriptions", strconv.Itoa(b.cfg.MaxSubscriptions)))
		return r
	}
	var replayStarts map[string]int64 // replay sessions: where each concrete subscription starts
	if on && s.ReplayEnabled() {
		replayStarts = map[string]int64{}
	}
	for _, name := range broadcast {
		if on && wantsReplay(replayReq, name) {
			starts, perr := b.subscribeReplay(ctx, s, name, replayReq)
			if perr != nil {
				r.Fail(perr)
				return r
			}
			maps.Copy(replayStarts, starts)
			continue
		}
		if replayStarts != nil && !channel.IsWildcard(name) {
			if head, err := b.eng.Head(ctx, name); err == nil {
				replayStarts[name] = int64(head.Offset)
			}
		}
		var err error
		if on && b.store != nil && !s.subscribed(name) && !channel.IsWildcard(name) {
			// Where the subscription starts, read before subscribing: an
			// adopter resumes from here what the client has not received.
			var head engine.Position
			if head, err = b.eng.Head(ctx, name); err == nil {
				s.setHead(name, head)
			}
		}
		switch {
		case err != nil:
		case on:
			err = b.idx.add(ctx, s, name)
		default:
			err = b.idx.remove(ctx, s, name)
		}
		if err != nil {
			b.log.Warn("subscription change failed", "session", s.id, "pattern", name, "subscribe", on, "err", err)
			r.Fail(protocol.NewError(protocol.CodeServerUnavailable, "Subscription failed: backplane unavailable", name))
			return r
		}
	}
	if on && s.closedReason() != nil {
		// The session ended while we subscribed: undo, so the index never
		// keeps a dead session.
		for _, name := range broadcast {
			_ = b.idx.remove(ctx, s, name)
		}
		return unknownClientReply(m)
	}
	if err := b.save(ctx, s); err != nil {
		b.log.Warn("subscription change not persisted", "session", s.id, "err", err)
		if s.closedReason() == errMoved {
			r.Fail(errMoved)
			r.Advice = b.movedAdvice()
			return r
		}
	}
	r.Succeed()
	if len(replayStarts) > 0 {
		// The client knows where each stream starts, so it can tell a
		// repeat from a first delivery, and resubscribe from there.
		r.SetExt("replay", replayStarts)
	}
	return r
}

// disconnectLead is how long after a /meta/disconnect the session's held
// connect is answered (402, reconnect "handshake"). Answered first, that reply makes
// the CometD client abort its pending disconnect request, which it then
// reports as failed; the lead lets the disconnect reply, which may travel
// through a forwarding node, arrive first.
const disconnectLead = 100 * time.Millisecond

func (b *Broker) disconnect(s *Session, m *protocol.Message) *protocol.Reply {
	b.removeSession(s, errDisconnected)
	time.AfterFunc(disconnectLead, func() {
		s.mu.Lock()
		if s.waiter != nil {
			s.endWaiterLocked(endClosed)
		}
		s.mu.Unlock()
	})
	r := protocol.ReplyTo(m)
	r.ClientID = s.id
	r.Succeed()
	return r
}

// subscribable validates (and, subscribing, authorizes) every name of a
// subscribe or unsubscribe, all before any takes effect: it returns the
// broadcast ones (service channels need no subscription).
func (b *Broker) subscribable(ctx context.Context, s *Session, m *protocol.Message, on bool) ([]string, *protocol.Error) {
	var broadcast []string
	for _, name := range m.Subscription.Names {
		if _, _, err := channel.Parse(name); err != nil {
			return nil, protocol.NewError(protocol.CodeInvalidChannel, "Invalid channel: "+err.Error(), name)
		}
		if protocol.IsMeta(name) {
			return nil, protocol.NewError(protocol.CodeInvalidChannel, "Cannot subscribe to a meta channel", name)
		}
		if protocol.IsService(name) {
			continue // direct deliveries reach the session anyway; never broadcast
		}
		if on {
			if err := b.cfg.Policy.CanSubscribe(ctx, s, name, m); err != nil {
				return nil, err
			}
		}
		broadcast = append(broadcast, name)
	}
	return broadcast, nil
}

// publish handles a publish from a client: to a /service/ channel (handled
// locally, never broadcast) or to a broadcast channel (through the engine).
// When the engine can queue publishes (engine.AsyncPublisher), a broadcast
// publish is queued and done, not nil, completes r once the engine has
// ordered it (or failed): the caller may queue more publishes first.
func (b *Broker) publish(ctx context.Context, s *Session, m *protocol.Message) (r *protocol.Reply, rateLimited bool, done func()) {
	r = protocol.ReplyTo(m)
	if protocol.IsMeta(m.Channel) {
		r.Fail(protocol.NewError(protocol.CodeInvalidChannel, "Unknown meta channel or publish to a meta channel", m.Channel))
		return r, false, nil
	}
	if err := validatePublishChannel(m.Channel); err != nil {
		r.Fail(err)
		return r, false, nil
	}
	if len(m.Data) == 0 {
		r.Fail(protocol.NewError(protocol.CodeBadRequest, "Missing data", m.Channel))
		return r, false, nil
	}
	if !s.takeToken(b.cfg.PublishRate, b.cfg.PublishBurst) {
		r.Fail(protocol.NewError(protocol.CodeTooMany, "Publish rate exceeded", m.Channel))
		return r, true, nil
	}
	if protocol.IsService(m.Channel) {
		if h := b.service(m.Channel); h != nil {
			if err := h(ctx, s, m); err != nil {
				r.Fail(err)
				return r, false, nil
			}
		}
		r.Succeed()
		return r, false, nil
	}
	if err := b.cfg.Policy.CanPublish(ctx, s, m.Channel, m); err != nil {
		b.obs.Publish(false)
		r.Fail(err)
		return r, false, nil
	}
	ctx, span := b.cfg.Tracer.Publish(ctx, m.Channel)
	payload := protocol.AppendPublication(make([]byte, 0, 32+len(m.Channel)+len(m.Data)), m.Channel, m.Data, nil, nil)
	complete := func(err error) {
		defer span.End()
		if err != nil {
			b.obs.Publish(false)
			b.log.Warn("publish failed", "channel", m.Channel, "err", err)
			msg := "Publish failed: backplane unavailable"
			if errors.Is(err, engine.ErrNotDurable) {
				msg = "Publish failed: not confirmed by enough Redis replicas; it may have been delivered"
			}
			r.Fail(protocol.NewError(protocol.CodeServerUnavailable, msg, m.Channel))
			return
		}
		b.metrics.publishes.Add(1)
		b.obs.Publish(true)
		r.Succeed()
	}
	if ae, ok := b.eng.(engine.AsyncPublisher); ok {
		wait := ae.PublishAsync(ctx, m.Channel, payload)
		return r, false, func() {
			_, err := wait()
			complete(err)
		}
	}
	_, err := b.eng.Publish(ctx, m.Channel, payload)
	complete(err)
	return r, false, nil
}
