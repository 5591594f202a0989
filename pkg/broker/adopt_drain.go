package broker

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// This file is the drain's side of adoption (adopt.go): a draining node
// releases every session, with exact positions, for a peer to adopt.

// handOff is the drain: every local session is persisted with its exact
// positions and released for a peer to adopt, its held connect answered
// with retry advice and a jittered interval, and it is removed here
// without deleting its record. The clients' next requests reach a peer,
// which adopts the sessions with the same clientIds and replays from
// history what they had not received.
func (b *Broker) handOff(ctx context.Context) error {
	all := b.sessions.snapshot()
	states := make([]*SessionState, 0, len(all))
	for _, s := range all {
		s.saveMu.Lock()
		s.mu.Lock()
		if s.closed != nil {
			s.mu.Unlock()
			s.saveMu.Unlock()
			continue
		}
		s.lost = true // deliver nothing more from here
		s.mu.Unlock()
		states = append(states, s.snapshot(true))
		s.saveMu.Unlock()
	}
	err := b.store.Release(ctx, states)
	for _, s := range all {
		b.removeSession(s, errMoved)
	}
	if err != nil {
		return fmt.Errorf("hand off %d sessions: %w", len(states), err)
	}
	b.log.Info("sessions handed off", "sessions", len(states))
	return nil
}

// movedAdvice is the advice of a held connect whose session moved: retry
// at once-ish (jittered, so a drained node's clients do not arrive
// together), with the configured hosts.
func (b *Broker) movedAdvice() *protocol.Advice {
	return &protocol.Advice{Reconnect: protocol.ReconnectRetry, Interval: protocol.Int64(rand.Int64N(b.cfg.DrainJitter.Milliseconds() + 1)), Hosts: b.cfg.Hosts}
}
