package ext

import (
	"context"
	"encoding/json"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// Ack is the acknowledgement extension.
type Ack struct{}

var _ broker.Extension = Ack{}

// Incoming applies the client's acknowledgement carried by /meta/connect.
func (Ack) Incoming(_ context.Context, s *broker.Session, m *protocol.Message) *protocol.Error {
	if s == nil || m.Channel != protocol.ChannelConnect || !s.AckEnabled() {
		return nil
	}
	raw := m.ExtField("ack")
	if raw == nil {
		return nil
	}
	var batch int64
	if err := json.Unmarshal(raw, &batch); err != nil {
		return protocol.NewError(protocol.CodeBadRequest, "ext.ack must be a batch number")
	}
	s.Acknowledge(batch)
	return nil
}

// Outgoing turns acknowledged delivery on at handshake and labels connect
// replies with their batch id.
func (Ack) Outgoing(_ context.Context, s *broker.Session, m *protocol.Message, r *protocol.Reply) {
	if s == nil || !r.OK() {
		return
	}
	switch m.Channel {
	case protocol.ChannelHandshake:
		var on bool
		if raw := m.ExtField("ack"); raw != nil && json.Unmarshal(raw, &on) == nil && on {
			s.EnableAck()
			r.SetExt("ack", true)
		}
	case protocol.ChannelConnect:
		// A session that ended here (moved to another node, or closed)
		// has no say on batch ids any more: its last id may be one the
		// client never received, or behind the new owner's numbering.
		// So has one being moved (hand-over, drain), unless this reply
		// carries a batch: then it names that batch, which was saved
		// before the move began and goes to the new owner unacknowledged;
		// without its id the client could not acknowledge it, and would
		// get it again.
		if !s.AckEnabled() {
			return
		}
		if id := s.ReplyBatch(); id > 0 {
			r.SetExt("ack", id)
		} else if !s.Ended() && !s.Moving() {
			r.SetExt("ack", s.LastBatch())
		}
	}
}
