package ext

import (
	"context"
	"encoding/json"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// Replay is the replay extension, compatible with Salesforce's streaming
// clients: the handshake may carry ext.replay = true (and the reply says
// so); a /meta/subscribe may carry ext.replay = {"<channel>": id} with -1
// (new events only), -2 (everything retained) or a replay id (everything
// after it). As on Salesforce, the subscribe alone is enough: jsforce and
// EMP-Connector send ext.replay only there, so a subscribe with
// ext.replay turns replay on for its session. Every publication delivered
// to a replay session carries its replay id in ext.replay and, when its
// data is an object, in data.event.replayId (Salesforce's event shape).
// An id history cannot serve is refused with
// "400::The replayId {ID} you provided was invalid. ...".
//
// Delivery to a replay session is tracked by position, so it survives the
// loss of the node that owns the session (see broker.Session.EnableReplay).
type Replay struct{}

var _ broker.Extension = Replay{}

// Incoming reads the replay ids of a /meta/subscribe.
func (Replay) Incoming(_ context.Context, s *broker.Session, m *protocol.Message) *protocol.Error {
	if s == nil || m.Channel != protocol.ChannelSubscribe {
		return nil
	}
	raw := m.ExtField("replay")
	if raw == nil {
		return nil
	}
	var ids map[string]int64
	if err := json.Unmarshal(raw, &ids); err != nil {
		return protocol.NewError(protocol.CodeBadRequest, "ext.replay must map channels to replay ids")
	}
	for _, id := range ids {
		if id < broker.ReplayAll {
			return broker.InvalidReplayID(id)
		}
	}
	if !s.ReplayEnabled() {
		s.EnableReplay() // Salesforce clients ask for replay in the subscribe only
	}
	s.SetReplayRequest(ids)
	return nil
}

// Outgoing turns replay on at handshake.
func (Replay) Outgoing(_ context.Context, s *broker.Session, m *protocol.Message, r *protocol.Reply) {
	if s == nil || !r.OK() || m.Channel != protocol.ChannelHandshake {
		return
	}
	var on bool
	if raw := m.ExtField("replay"); raw != nil && json.Unmarshal(raw, &on) == nil && on {
		s.EnableReplay()
		r.SetExt("replay", true)
	}
}
