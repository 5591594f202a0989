package ext

import (
	"context"
	"encoding/json"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// TimeSync is the timesync extension.
type TimeSync struct{}

var _ broker.Extension = TimeSync{}

type timesyncReq struct {
	TC *int64 `json:"tc"`
	L  int64  `json:"l"`
	O  int64  `json:"o"`
}

// Incoming does nothing: the receive time is on the message.
func (TimeSync) Incoming(context.Context, *broker.Session, *protocol.Message) *protocol.Error {
	return nil
}

// Outgoing answers ext.timesync {tc,l,o} with {tc, ts, p, a}: ts is when the
// server received the request, p the time it spent on it, a = tc+o+l-ts the
// client's estimated accuracy.
func (TimeSync) Outgoing(_ context.Context, _ *broker.Session, m *protocol.Message, r *protocol.Reply) {
	if !protocol.IsMeta(m.Channel) {
		return
	}
	raw := m.ExtField("timesync")
	if raw == nil {
		return
	}
	var req timesyncReq
	if err := json.Unmarshal(raw, &req); err != nil || req.TC == nil {
		return
	}
	received := m.Received
	if received.IsZero() {
		received = time.Now()
	}
	ts := received.UnixMilli()
	p := time.Since(received).Milliseconds()
	r.SetExt("timesync", map[string]int64{"tc": *req.TC, "ts": ts, "p": p, "a": *req.TC + req.O + req.L - ts})
}
