package broker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// Router serves requests for sessions this node does not hold. Package
// cluster implements it; a single node has none. Methods are called
// concurrently from transport goroutines.
type Router interface {
	// Members are the membership facts adoption decides by (adopt.go):
	// who serves a session this node does not hold is decided here, in
	// the broker.
	Members
	// Forward passes a request to node (a node tag from Members) and
	// returns its response. It blocks while the node holds a
	// /meta/connect; ctx ends when the client goes away, and the owner
	// then keeps the undelivered messages queued.
	Forward(ctx context.Context, node string, req *ForwardedRequest) (*ForwardedResponse, error)
	// SessionOp applies op (see Broker.SessionOp) on node.
	SessionOp(ctx context.Context, node, clientID string, op SessionOpKind) (bool, error)
}

// maxHops bounds forwarding: the receiving node, then at most one more
// (the session moved while the request was on its way).
const maxHops = 2

// SessionOpKind names an operation on one session (Broker.SessionOp); its
// value is the name the debug API and the node-to-node API carry.
type SessionOpKind string

// Session operations.
const (
	OpExpire          SessionOpKind = "expire"            // end the session as if swept
	OpDropNextConnect SessionOpKind = "drop-next-connect" // debug: lose the next connect reply carrying messages
	// OpReleaseConnect answers the session's held connect at once, empty
	// (its messages stay queued): a draining node forwarding it asks this,
	// so that the reply travels back the normal way.
	OpReleaseConnect SessionOpKind = "release-connect"
)

// SessionOp applies op to the session clientID wherever it lives (through
// the Router when another node owns it). It reports whether it existed.
//
// The session's creator is asked first; a creator that no longer holds it
// (it moved: hand-over) answers not found, and the op goes to the owner
// the record names (resolve as for a forwarded request).
func (b *Broker) SessionOp(ctx context.Context, clientID string, op SessionOpKind) (bool, error) {
	if _, ok := b.Session(clientID); !ok && b.router != nil {
	resolve:
		for hops := 0; hops < maxHops; hops++ {
			rt, err := b.resolve(ctx, clientID, hops)
			switch {
			case err != nil:
				return false, fmt.Errorf("session op %s: %w", clientID, err)
			case rt.node != "":
				found, err := b.router.SessionOp(ctx, rt.node, clientID, op)
				if found || err != nil || hops > 0 {
					return found, err
				}
				continue
			case rt.adopt != nil:
				if _, err := b.adopt(ctx, rt.adopt); err != nil {
					return false, err
				}
			}
			break resolve
		}
	}
	return b.LocalSessionOp(clientID, op)
}

// LocalSessionOp applies op to a session of this node.
func (b *Broker) LocalSessionOp(clientID string, op SessionOpKind) (bool, error) {
	if to, ok := strings.CutPrefix(string(op), string(OpHandOver)+":"); ok {
		return b.handOverTo(clientID, to)
	}
	switch op {
	case OpExpire:
		return b.ExpireSession(clientID), nil
	case OpDropNextConnect:
		_, ok := b.Session(clientID)
		if ok {
			b.faults.armDrop(clientID)
		}
		return ok, nil
	case OpReleaseConnect:
		s, ok := b.Session(clientID)
		if ok {
			s.mu.Lock()
			if s.waiter != nil {
				s.endWaiterLocked(endReplaced)
			}
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
	Hops       int // forwards so far (1 on the first receiving node)
}

// ForwardedResponse is the owner's answer: the JSON array to write.
type ForwardedResponse struct {
	Body []byte
	// RateRefused counts the request's publishes the owner refused for
	// their rate: the receiving node paces its client by them (throttle).
	RateRefused int
}

// SetCluster installs the cluster router and session store (and the
// store's Fence, if it implements one). It must be called before the
// broker serves requests.
func (b *Broker) SetCluster(r Router, st SessionStore) {
	b.router, b.store = r, st
	if st != nil {
		b.installFence(st)
	}
}

// holdsConnect reports whether msgs hold a /meta/connect.
func holdsConnect(msgs []*protocol.Message) bool {
	for _, m := range msgs {
		if m.Channel == protocol.ChannelConnect {
			return true
		}
	}
	return false
}

// releaseWait bounds how long a draining node waits for the owner of a
// forwarded held connect to release it (and then for the reply).
const releaseWait = 2 * time.Second

// clientIDOf returns the first clientId in msgs.
func clientIDOf(msgs []*protocol.Message) string {
	for _, m := range msgs {
		if m.ClientID != "" {
			return m.ClientID
		}
	}
	return ""
}
