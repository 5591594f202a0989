package broker

import (
	"context"
	"net/http"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// RequestInfo describes the transport request a message arrived on.
type RequestInfo struct {
	Transport  string      // long-polling, callback-polling or websocket
	RemoteAddr string      // the client's address: the TCP peer, or X-Forwarded-For behind a trusted proxy
	Header     http.Header // request headers (of the upgrade request for websocket); read-only
}

// Policy authorizes what clients do. Methods are called concurrently, without
// broker locks held; a non-nil *protocol.Error denies (it is sent to the
// client as is; use code 403). m is the request message; it must not be
// modified.
type Policy interface {
	CanHandshake(ctx context.Context, info RequestInfo, m *protocol.Message) *protocol.Error
	CanSubscribe(ctx context.Context, s *Session, channel string, m *protocol.Message) *protocol.Error
	CanPublish(ctx context.Context, s *Session, channel string, m *protocol.Message) *protocol.Error
}

// AllowAll is the default Policy.
type AllowAll struct{}

// CanHandshake allows.
func (AllowAll) CanHandshake(context.Context, RequestInfo, *protocol.Message) *protocol.Error {
	return nil
}

// CanSubscribe allows.
func (AllowAll) CanSubscribe(context.Context, *Session, string, *protocol.Message) *protocol.Error {
	return nil
}

// CanPublish allows.
func (AllowAll) CanPublish(context.Context, *Session, string, *protocol.Message) *protocol.Error {
	return nil
}

// Extension observes and amends messages. Incoming runs for every incoming
// message before the broker acts on it (s is nil for a handshake); a non-nil
// error rejects the message with that error. Outgoing runs for every reply
// the broker sends to a session (meta, service and publish replies), after
// the broker has filled it, with the request it answers; s is nil for a
// failed handshake. Broadcast publications do not pass through Outgoing:
// they are encoded once for all subscribers.
//
// Calls are concurrent, without broker locks held; implementations keep
// per-session state with Session.Set/Get.
type Extension interface {
	Incoming(ctx context.Context, s *Session, m *protocol.Message) *protocol.Error
	Outgoing(ctx context.Context, s *Session, m *protocol.Message, r *protocol.Reply)
}

// ServiceHandler handles a publish to a /service/ channel. It may answer the
// publisher with s.Deliver. A non-nil error fails the publish reply.
type ServiceHandler func(ctx context.Context, s *Session, m *protocol.Message) *protocol.Error
