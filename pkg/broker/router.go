package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// Router serves requests for sessions this node does not own. Package
// cluster implements it; a single node has none. Methods are called
// concurrently from transport goroutines.
type Router interface {
	// IsLocal reports whether this node must serve clientID itself: it owns
	// the session, or no live node does (the broker then answers 402).
	IsLocal(clientID string) bool
	// Forward passes a request to the owner of clientID and returns the
	// owner's response. It blocks while the owner holds a /meta/connect;
	// ctx ends when the client goes away, and the owner then keeps the
	// undelivered messages queued.
	Forward(ctx context.Context, clientID string, req *ForwardedRequest) (*ForwardedResponse, error)
	// SessionOp applies op (see Broker.SessionOp) on the owner of clientID.
	SessionOp(ctx context.Context, clientID, op string) (bool, error)
}

// Session operations.
const (
	OpExpire          = "expire"            // end the session as if swept
	OpDropNextConnect = "drop-next-connect" // debug: lose the next connect reply carrying messages
)

// SessionOp applies op to the session clientID wherever it lives (through
// the Router when another node owns it). It reports whether it existed.
func (b *Broker) SessionOp(ctx context.Context, clientID, op string) (bool, error) {
	if _, ok := b.Session(clientID); !ok && b.router != nil && !b.router.IsLocal(clientID) {
		return b.router.SessionOp(ctx, clientID, op)
	}
	return b.LocalSessionOp(clientID, op)
}

// LocalSessionOp applies op to a session of this node.
func (b *Broker) LocalSessionOp(clientID, op string) (bool, error) {
	switch op {
	case OpExpire:
		return b.ExpireSession(clientID), nil
	case OpDropNextConnect:
		s, ok := b.Session(clientID)
		if ok {
			s.mu.Lock()
			s.dropNext = true
			s.mu.Unlock()
		}
		return ok, nil
	}
	return false, fmt.Errorf("unknown session op %q", op)
}

// ForwardedRequest is a transport request passed to the session's owner.
type ForwardedRequest struct {
	Transport  string   // the transport the client used
	Parts      [][]byte // the raw JSON texts (arrays or objects) of the request
	BrowserID  string   // BAYEUX_BROWSER cookie, if any
	RemoteAddr string
}

// ForwardedResponse is the owner's answer: the JSON array to write.
type ForwardedResponse struct {
	Body  []byte
	Abort bool // lose the reply in transit (debug API)
}

// SetRouter installs the cluster router. It must be called before the
// broker serves requests.
func (b *Broker) SetRouter(r Router) { b.router = r }

// remoteClient returns the clientId a decoded request must be forwarded
// for, or "" when this node serves it. A request carrying a handshake is
// always served here (the new session is local).
func (b *Broker) remoteClient(msgs []*protocol.Message) string {
	if b.router == nil {
		return ""
	}
	for _, m := range msgs {
		if m.Channel == protocol.ChannelHandshake {
			return ""
		}
	}
	for _, m := range msgs {
		if m.ClientID != "" {
			if _, ok := b.Session(m.ClientID); ok || b.router.IsLocal(m.ClientID) {
				return ""
			}
			return m.ClientID
		}
	}
	return ""
}

// forward sends a request to the owner; if the owner cannot be reached the
// client gets per-message errors with retry advice, so it tries again
// (membership soon settles who owns the session).
func (b *Broker) forward(ctx context.Context, clientID string, req *ForwardedRequest, msgs []*protocol.Message) (*ForwardedResponse, bool) {
	resp, err := b.router.Forward(ctx, clientID, req)
	if err == nil {
		return resp, true
	}
	if ctx.Err() != nil {
		return nil, false
	}
	b.log.Warn("forward to session owner failed", "session", clientID, "err", err)
	replies := make([]*protocol.Reply, 0, len(msgs))
	for _, m := range msgs {
		r := protocol.ReplyTo(m)
		r.Fail(protocol.NewError(protocol.CodeServerUnavailable, "Session owner unavailable", clientID))
		r.Advice = &protocol.Advice{Reconnect: protocol.ReconnectRetry, Interval: protocol.Int64(500)}
		b.observeReply(r)
		replies = append(replies, r)
	}
	return &ForwardedResponse{Body: appendResponse(nil, replies, nil, nil)}, true
}

// ServeForwarded serves a request another node forwarded to this node, the
// session's owner. A /meta/connect is held as for long-polling, until
// deliveries, its timeout, or ctx ends (then nothing is delivered and the
// messages stay queued).
func (b *Broker) ServeForwarded(ctx context.Context, req *ForwardedRequest) (*ForwardedResponse, error) {
	var msgs []*protocol.Message
	var err error
	for _, p := range req.Parts {
		if msgs, err = protocol.DecodeAppend(msgs, p, b.cfg.Limits); err != nil {
			var re *protocol.RequestError
			if errors.As(err, &re) {
				return nil, fmt.Errorf("forwarded request: %w", re)
			}
			return nil, fmt.Errorf("forwarded request: %w", err)
		}
	}
	r := &request{
		info:      RequestInfo{Transport: req.Transport, RemoteAddr: req.RemoteAddr},
		browserID: req.BrowserID,
		msgs:      msgs,
		received:  time.Now(),
	}
	res := b.process(ctx, r)
	if hc := res.connect; hc != nil {
		delivered := b.awaitConnect(ctx, hc)
		pubs, drop := b.finishConnect(hc, delivered)
		if !delivered {
			return nil, ctx.Err()
		}
		return &ForwardedResponse{Body: appendResponse(nil, res.replies, pubs, hc.reply), Abort: drop}, nil
	}
	return &ForwardedResponse{Body: appendResponse(nil, res.replies, nil, nil)}, nil
}
