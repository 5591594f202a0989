package broker

import (
	"context"
	"fmt"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// errEnded is the close reason of a session the server ended without
// inviting it back (EndSession with reconnect false): its held connect, and
// any later request of its client, is answered with reconnect "none".
var errEnded = protocol.NewError(protocol.CodeUnknownClient, "Disconnected by the server")

// Sessions returns a snapshot of the sessions this node holds.
func (b *Broker) Sessions() []*Session { return b.sessions.snapshot() }

// EndSession ends the local session id on the server's initiative. Its
// client is told in-band: with reconnect, a 402 with advice "handshake"
// (as for an expired session); without, advice "none". It reports whether
// the session existed here.
func (b *Broker) EndSession(id string, reconnect bool) bool {
	if reconnect {
		return b.ExpireSession(id)
	}
	s, ok := b.Session(id)
	if !ok {
		return false
	}
	b.removeSession(s, errEnded)
	return true
}

// Unsubscribe removes the local session id's subscription to pattern on the
// server's initiative (the client is not told). It reports whether the
// session existed here and was subscribed.
func (b *Broker) Unsubscribe(ctx context.Context, id, pattern string) (bool, error) {
	if _, _, err := channel.Parse(pattern); err != nil {
		return false, fmt.Errorf("unsubscribe: invalid channel %q: %w", pattern, err)
	}
	s, ok := b.Session(id)
	if !ok || !s.subscribed(pattern) {
		return false, nil
	}
	if err := b.idx.remove(ctx, s, pattern); err != nil {
		return false, fmt.Errorf("unsubscribe %s from %s: %w", id, pattern, err)
	}
	if err := b.save(ctx, s); err != nil {
		b.log.Warn("subscription change not persisted", "session", s.id, "err", err)
	}
	return true, nil
}

// Transport returns the transport of the session's latest /meta/connect
// (the handshake's until the first connect).
func (s *Session) Transport() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.transport != "" {
		return s.transport
	}
	return s.info.Transport
}
