package broker

import (
	"maps"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// This file holds the session state that survives the loss of its owner
// (cluster mode): positions per channel, acknowledged batches, durable
// extension state, and the replay-id variant of publications. It is the
// session's side of what a record keeps (adoption: adopt.go).

// endOf returns, per channel, the position of the last publication of
// pubs (nil on a single node, where nothing is persisted). Direct
// deliveries (no epoch) have no position.
func (s *Session) endOf(pubs []*engine.Publication) map[string]engine.Position {
	if s.b.store == nil {
		return nil
	}
	end := make(map[string]engine.Position, 1)
	for _, p := range pubs {
		if p.Epoch != "" {
			end[p.Channel] = engine.Position{Epoch: p.Epoch, Offset: p.Offset}
		}
	}
	return end
}

// deliveredLocked advances the positions for pubs handed to the transport
// (unacknowledged delivery; cluster mode only).
func (s *Session) deliveredLocked(pubs []*engine.Publication) {
	if s.acked == nil {
		return
	}
	for _, p := range pubs {
		if p.Epoch != "" {
			s.advanceLocked(p.Channel, engine.Position{Epoch: p.Epoch, Offset: p.Offset})
		}
	}
}

// SetDurable stores extension state (JSON) that is persisted with the
// session and restored on the node that adopts it.
func (s *Session) SetDurable(key string, value []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.durable == nil {
		s.durable = map[string][]byte{}
	}
	s.durable[key] = value
}

// Durable returns extension state stored with SetDurable (here or on the
// node the session was adopted from).
func (s *Session) Durable(key string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.durable[key]
	return v, ok
}

// EnableReplay switches the session to replay delivery: every publication
// carries its replay id in ext.replay, and deliveries are tracked by
// position so that they survive the loss of the owner. Without the ack
// extension a /meta/connect acknowledges every batch delivered before it.
// Called by the replay extension at handshake.
func (s *Session) EnableReplay() {
	s.replay.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ack {
		s.ack, s.implicit, s.push = true, true, nil
	}
}

// ReplayEnabled reports whether the replay extension is on.
func (s *Session) ReplayEnabled() bool { return s.replay.Load() }

// implicitAck acknowledges, when the client's acknowledgement is its next
// /meta/connect (replay without ack), the delivered batches the client
// has: connectID is the message id (raw JSON) of the connect being
// processed.
//
// A client of Faye's family (sameIDRetry) resends a connect whose reply it
// lost with the same id, and a connect with a new id only after the
// previous reply arrived. So a connect with the id of the one that carried
// a batch did not get it (the batch is resent), and one with another id
// acknowledges every batch before it: also on a node that adopted the
// session, where the reply's fate is unknown otherwise. For other clients
// (and connects or batches without an id) a connect acknowledges every
// batch on the node that delivered them, and none on a node that adopted
// the session (the last batch is resent: at least once).
func (s *Session) implicitAck(connectID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.implicit {
		return
	}
	through, known := s.lastBatch, !s.recovering
	if s.sameIDRetry && connectID != "" {
		known = true
		for _, b := range s.unacked {
			if b.connect == "" {
				known = !s.recovering
				break
			}
			if b.connect == connectID {
				through = b.id - 1 // carried by this connect: its reply was lost
				break
			}
		}
	}
	if known {
		s.acknowledgeLocked(through)
	}
}

// setHead records pos as the starting point of ch when the session has no
// position there yet (cluster mode; a fresh subscription).
func (s *Session) setHead(ch string, pos engine.Position) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.acked == nil {
		return
	}
	if _, ok := s.acked[ch]; !ok {
		s.acked[ch] = pos
	}
}

// takeNewBatch reports (and clears) whether a batch was made since the
// last call: a connect that only resends unacknowledged batches needs no
// save.
func (s *Session) takeNewBatch() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.newBatch
	s.newBatch = false
	return n
}

// retractBatch takes back the batch endConnect just made, which could not
// be saved (this node lacks its lease): its publications return to the
// front of the queue and its id is used again, as if it was never made.
// Nothing of it was written to the client.
func (s *Session) retractBatch() {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.unacked)
	if n == 0 || s.unacked[n-1].id != s.lastBatch {
		return
	}
	last := s.unacked[n-1]
	s.unacked = s.unacked[:n-1]
	s.lastBatch--
	s.queue = append(append(make([]*engine.Publication, 0, len(last.pubs)+len(s.queue)), last.pubs...), s.queue...)
}

// snapshot returns the session's durable state. withPositions includes the
// positions of an unacknowledged session (only exact at drain, when nothing
// more is delivered).
func (s *Session) snapshot(withPositions bool) *SessionState {
	subs := s.Subscriptions()
	seen, base36 := s.seq.Mark()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &SessionState{
		ID: s.id, BrowserID: s.browserID, Transport: s.transport, Subs: subs,
		Ack: s.ack && !s.implicit, Replay: s.replay.Load(), LastBatch: s.lastBatch,
		Durable: maps.Clone(s.durable), SameIDRetry: s.sameIDRetry, Exact: withPositions,
		Seen: seen, Base36: base36,
	}
	if s.ack || withPositions {
		st.Acked = maps.Clone(s.acked)
		for _, b := range s.unacked {
			st.Batches = append(st.Batches, BatchState{ID: b.id, End: maps.Clone(b.end), Connect: b.connect})
		}
	}
	return st
}

// withReplayID returns p with its replay id (the offset) in ext.replay
// and, when its data is an object, in data.event.replayId (where
// Salesforce-style clients read it; see protocol.AppendReplayID). It is
// made once per publication and shared by every replay subscriber.
func withReplayID(p *engine.Publication) *engine.Publication {
	if p.Epoch == "" {
		return p
	}
	b, ok := protocol.AppendReplayID(make([]byte, 0, len(p.Payload)+48), p.Payload, p.Offset)
	if !ok {
		return p
	}
	return &engine.Publication{Channel: p.Channel, Epoch: p.Epoch, Offset: p.Offset, Payload: b, Time: p.Time}
}
