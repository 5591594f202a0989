package serverapi

import (
	"context"
	"encoding/json"
	"errors"
)

// The narrow interfaces the API needs from the node it runs on. Package
// serverapi/nodeapi implements them over the broker, its engine and the
// cluster; tests may implement them directly.

// Publisher publishes from the server side: the same path as a client
// publish (order per channel, history, replay ids).
type Publisher interface {
	// Publish returns the publication's replay id.
	Publish(ctx context.Context, channel string, data json.RawMessage) (int64, error)
}

// History reads a channel's retained publications.
type History interface {
	// History returns up to limit publications of channel after replay id
	// since (since < 0: from the oldest retained), oldest first.
	History(ctx context.Context, channel string, since int64, limit int) ([]HistoryMessage, error)
}

// LocalSession is a session held by this node, as presence sees it.
type LocalSession struct {
	ClientID      string   `json:"clientId"`
	Transport     string   `json:"transport"`
	User          string   `json:"user,omitempty"`
	Subscriptions []string `json:"subscriptions"`
}

// Presence lists the sessions this node holds (memory only).
type Presence interface {
	Sessions() []LocalSession
}

// SessionControl acts on sessions this node holds.
type SessionControl interface {
	// EndSession ends clientID if held here; the client is told in-band to
	// handshake again (reconnect) or not to reconnect.
	EndSession(clientID string, reconnect bool) bool
	// Unsubscribe removes clientID's subscription to channel if held here.
	Unsubscribe(ctx context.Context, clientID, channel string) (bool, error)
}

// Stats describes this node.
type Stats interface {
	Info() NodeInfo
}

// Peers reaches the other live nodes of a cluster. A single node has none
// (Config.Peers nil).
type Peers interface {
	// Others returns the ids of the other live nodes.
	Others() []string
	// Call runs method on node with body and returns its answer.
	Call(ctx context.Context, node, method string, body []byte) ([]byte, error)
	// Handle registers h to answer Calls of method from peers.
	Handle(method string, h func(ctx context.Context, body []byte) ([]byte, error))
}

// Errors the backends return for the API to map.
var (
	// ErrInvalid: the request is malformed (400).
	ErrInvalid = errors.New("invalid request")
	// ErrUnavailable: the backplane cannot serve the call now (503).
	ErrUnavailable = errors.New("unavailable")
)
