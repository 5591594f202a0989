package serverapi

import "encoding/json"

// The request and response bodies of the HTTP API (JSON), shared by the
// server, the Go client and the node-to-node calls.

// Error is the body of every failed call: {"error":{"code":..,"message":..}}.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Status is the HTTP status the Client received (not on the wire).
	Status int `json:"-"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Error codes.
const (
	CodeUnauthorized   = "unauthorized"     // missing or wrong API key (401)
	CodeNotConfigured  = "not_configured"   // no key file: the API refuses every call (401)
	CodeBadRequest     = "bad_request"      // malformed body or parameters (400)
	CodeTooLarge       = "too_large"        // body over the size limit (413)
	CodeRateLimited    = "rate_limited"     // over the call rate (429)
	CodeNotFound       = "not_found"        // no such session (404)
	CodeUnavailable    = "unavailable"      // the backplane or a peer failed (503)
	CodeMethodNotFound = "method_not_found" // unknown path or method (404/405)
)

type errorBody struct {
	Error *Error `json:"error"`
}

// PublishRequest is the body of POST /api/v1/publish.
type PublishRequest struct {
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

// PublishResult is one published message: its channel and replay id (the
// id a replay subscription resumes after).
type PublishResult struct {
	Channel  string `json:"channel"`
	ReplayID int64  `json:"replayId"`
	Error    *Error `json:"error,omitempty"` // broadcast only: this channel failed
}

// BroadcastRequest is the body of POST /api/v1/broadcast.
type BroadcastRequest struct {
	Channels []string        `json:"channels"`
	Data     json.RawMessage `json:"data"`
}

// BroadcastResult has one result per requested channel, in order.
type BroadcastResult struct {
	Results []PublishResult `json:"results"`
}

// ChannelInfo is a channel (or wildcard pattern) in use and how many
// sessions subscribe to it, cluster-wide.
type ChannelInfo struct {
	Channel     string `json:"channel"`
	Subscribers int    `json:"subscribers"`
}

// ChannelsResult answers GET /api/v1/channels.
type ChannelsResult struct {
	Channels []ChannelInfo `json:"channels"`
	// Unreachable lists nodes that did not answer: the list lacks their
	// sessions.
	Unreachable []string `json:"unreachable,omitempty"`
}

// SessionInfo is one session in a presence list.
type SessionInfo struct {
	ClientID  string `json:"clientId"`
	Node      string `json:"node"`
	Transport string `json:"transport"`
	User      string `json:"user,omitempty"`
}

// PresenceResult answers GET /api/v1/presence.
type PresenceResult struct {
	Channel     string        `json:"channel"`
	Sessions    []SessionInfo `json:"sessions"`
	Unreachable []string      `json:"unreachable,omitempty"`
}

// HistoryMessage is one retained publication.
type HistoryMessage struct {
	ReplayID int64           `json:"replayId"`
	Data     json.RawMessage `json:"data"`
}

// HistoryResult answers GET /api/v1/history, oldest first.
type HistoryResult struct {
	Channel  string           `json:"channel"`
	Messages []HistoryMessage `json:"messages"`
}

// DisconnectRequest is the body of POST /api/v1/disconnect: one of
// ClientID or User. Reconnect (default true) tells the client to
// handshake again; false tells it not to reconnect.
type DisconnectRequest struct {
	ClientID  string `json:"clientId,omitempty"`
	User      string `json:"user,omitempty"`
	Reconnect *bool  `json:"reconnect,omitempty"`
}

// DisconnectResult lists the sessions that ended.
type DisconnectResult struct {
	Disconnected []string `json:"disconnected"`
	Unreachable  []string `json:"unreachable,omitempty"`
}

// UnsubscribeRequest is the body of POST /api/v1/unsubscribe.
type UnsubscribeRequest struct {
	ClientID string `json:"clientId"`
	Channel  string `json:"channel"`
}

// UnsubscribeResult says whether the session was subscribed (and no
// longer is).
type UnsubscribeResult struct {
	Unsubscribed bool     `json:"unsubscribed"`
	Unreachable  []string `json:"unreachable,omitempty"`
}

// NodeInfo describes a live node.
type NodeInfo struct {
	ID       string `json:"id"`
	Tag      string `json:"tag,omitempty"`
	Version  string `json:"version"`
	Sessions int    `json:"sessions"`
	// Per-second rates over the last sampling window.
	PublishRate  float64 `json:"publishRate"`
	DeliveryRate float64 `json:"deliveryRate"`
}

// NodesResult answers GET /api/v1/nodes.
type NodesResult struct {
	Self        string     `json:"self"` // the id of the node that answered
	Nodes       []NodeInfo `json:"nodes"`
	Unreachable []string   `json:"unreachable,omitempty"`
}
