package broker

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
	"github.com/bayeux-cluster/bayeux/pkg/tracing"
)

// Config configures a Broker. Zero fields take the documented defaults.
type Config struct {
	// Engine orders and distributes publications (default: engine.NewMemory).
	Engine engine.Engine
	// Logger (default: slog.Default()).
	Logger *slog.Logger

	// Timeout is how long a /meta/connect is held (default 30s).
	Timeout time.Duration
	// MaxTimeout caps a timeout proposed by a client (default 120s).
	MaxTimeout time.Duration
	// Interval is the advised pause between connects (default 0).
	Interval time.Duration
	// MaxInterval is how long a session lives without a connect (default 10s).
	MaxInterval time.Duration
	// PeerLossGrace is added to MaxInterval for sessions' expiry during
	// the PeerLossGrace after a peer is lost (Broker.PeerLost; default 60s,
	// negative disables): see grace.go.
	PeerLossGrace time.Duration
	// MultipleClientsInterval is the polling interval advised to a second
	// session of the same browser over HTTP (default 2s).
	MultipleClientsInterval time.Duration
	// SweepInterval is how often expired sessions are removed (default 1s).
	SweepInterval time.Duration

	// Limits bound each request's messages.
	Limits protocol.Limits
	// MaxRequestBytes bounds an HTTP body or websocket frame (default 1 MiB).
	MaxRequestBytes int64
	// WebSocketFrameTimeout bounds how long a websocket client may take to
	// send a frame once the reader waits for it: the socket's read deadline
	// is moved to now+WebSocketFrameTimeout at a frame boundary when less
	// than half of it is left (default 30s). A client that stalls inside a
	// frame is disconnected instead of holding a goroutine forever.
	WebSocketFrameTimeout time.Duration
	// ReorderWindow bounds how long a message of a session waits for the
	// messages its client numbered before it when they travel on other,
	// concurrent requests (default 2s; negative disables). Earlier
	// messages that arrived and are only slow to be processed are waited
	// for up to 5 windows. A publish that arrives after later messages of
	// its client were processed (later than the window) is refused with
	// 408 when a window is set (see sequencer.Late). See sequencer.
	ReorderWindow time.Duration
	// DisableWebSocketCompression turns off permessage-deflate, which is
	// otherwise negotiated with every client offering it (RFC 7692,
	// without context takeover; the message size limit applies to the
	// decompressed size).
	DisableWebSocketCompression bool
	// MaxQueueMessages and MaxQueueBytes bound a session's queue, unacked
	// batches included (defaults 10,000 and 16 MiB). Overflow terminates the
	// session with error 409 and handshake advice.
	MaxQueueMessages int
	MaxQueueBytes    int
	// MaxSubscriptions bounds the subscriptions of one session (default 1,000).
	MaxSubscriptions int
	// PublishRate and PublishBurst bound one session's publishes with a
	// token bucket (default 2,000/s, burst 4,000; a negative rate disables
	// it). A publish over the limit is answered 429 and not published.
	PublishRate  float64
	PublishBurst int
	// MaxSessionsPerBrowser bounds the live sessions of one BAYEUX_BROWSER
	// cookie on this node (default 100; negative disables). A handshake over
	// the limit is answered 429 with retry advice and a 10 s interval.
	MaxSessionsPerBrowser int

	// MaxSessionsPerIP bounds the live sessions of one client address on
	// this node (default 1,000; negative disables); a handshake over it is
	// answered 429 with retry advice and a 10 s interval. MaxHeldPerIP
	// bounds its held /meta/connects (default 1,000; negative disables); a
	// connect over it is answered at once with 429 and a 1 s interval.
	MaxSessionsPerIP int
	MaxHeldPerIP     int
	// TrustedProxies are the balancers whose X-Forwarded-For names the
	// client address (otherwise the TCP peer is the client).
	TrustedProxies []netip.Prefix

	// Transports lists the enabled connection types (default: all three).
	Transports []string
	// KeepHeaders, if not nil, lists the request headers a session keeps
	// from its handshake request, and a websocket from its upgrade request
	// for the handshakes made on it (RequestInfo.Header): the ones the
	// Policy reads. Others are dropped, which saves about 0.7 KB per idle
	// session. nil keeps every header.
	KeepHeaders []string
	// AllowedOrigins restricts CORS and websocket origins (host patterns as
	// in path.Match, e.g. "*.example.com"); empty allows any origin.
	AllowedOrigins []string
	// IDPrefix is prepended to every clientId (the node tag in a cluster).
	IDPrefix string
	// BrowserCookie is the name of the browser-identifying cookie (default
	// BAYEUX_BROWSER). CookieSecure adds the Secure attribute.
	BrowserCookie string
	CookieSecure  bool

	// Policy authorizes handshakes, subscriptions and publishes (default:
	// allow all).
	Policy Policy
	// Extensions run in order on incoming messages and in reverse order on
	// outgoing replies.
	Extensions []Extension

	// Hosts is advised (advice.hosts) to clients whose session moves to
	// another node when this one drains.
	Hosts []string
	// DrainJitter bounds the random interval advised to clients when their
	// session moves (drain), so they do not all arrive at once (default 2s).
	DrainJitter time.Duration
	// HandOverHold: a session whose websocket reaches a node that does not
	// own it moves to that node (adopt_handover.go), unless it moved less than
	// HandOverHold ago; a websocket asks at most once per HandOverHold
	// (default 2s; negative disables: frames are forwarded).
	HandOverHold time.Duration

	// Observer, if not nil, receives operational events (metrics). See
	// Observer for its contract.
	Observer Observer
	// Tracer, if not nil, traces each publish (see package tracing).
	Tracer *tracing.Tracer
}

func (c *Config) setDefaults() error {
	if c.Engine == nil {
		c.Engine = engine.NewMemory(engine.MemoryConfig{})
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Timeout, 30*time.Second)
	def(&c.MaxTimeout, 120*time.Second)
	def(&c.MaxInterval, 10*time.Second)
	def(&c.MultipleClientsInterval, 2*time.Second)
	def(&c.DrainJitter, 2*time.Second)
	if c.HandOverHold == 0 {
		c.HandOverHold = 2 * time.Second
	}
	if c.PeerLossGrace == 0 {
		c.PeerLossGrace = time.Minute
	} else if c.PeerLossGrace < 0 {
		c.PeerLossGrace = 0
	}
	if c.ReorderWindow == 0 {
		c.ReorderWindow = 2 * time.Second
	}
	if c.MaxSessionsPerIP == 0 {
		c.MaxSessionsPerIP = 1000
	}
	if c.MaxHeldPerIP == 0 {
		c.MaxHeldPerIP = 1000
	}
	def(&c.SweepInterval, time.Second)
	if c.Interval < 0 {
		return fmt.Errorf("broker config: negative interval %v", c.Interval)
	}
	if c.Limits.MaxMessages <= 0 {
		c.Limits.MaxMessages = 256
	}
	if c.Limits.MaxMessageBytes <= 0 {
		c.Limits.MaxMessageBytes = 256 << 10
	}
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = 1 << 20
	}
	if c.WebSocketFrameTimeout <= 0 {
		c.WebSocketFrameTimeout = 30 * time.Second
	}
	if c.MaxQueueMessages <= 0 {
		c.MaxQueueMessages = 10000
	}
	if c.MaxQueueBytes <= 0 {
		c.MaxQueueBytes = 16 << 20
	}
	if c.MaxSubscriptions <= 0 {
		c.MaxSubscriptions = 1000
	}
	if c.PublishRate == 0 {
		c.PublishRate = 2000
	}
	if c.PublishBurst <= 0 {
		c.PublishBurst = 2 * int(max(c.PublishRate, 1))
	}
	if c.MaxSessionsPerBrowser == 0 {
		c.MaxSessionsPerBrowser = 100
	}
	if len(c.Transports) == 0 {
		c.Transports = []string{protocol.WebSocket, protocol.LongPolling, protocol.CallbackPolling}
	}
	for _, t := range c.Transports {
		switch t {
		case protocol.WebSocket, protocol.LongPolling, protocol.CallbackPolling:
		default:
			return fmt.Errorf("broker config: unknown transport %q", t)
		}
	}
	if c.BrowserCookie == "" {
		c.BrowserCookie = "BAYEUX_BROWSER"
	}
	if c.Policy == nil {
		c.Policy = AllowAll{}
	}
	if c.Timeout > c.MaxTimeout {
		return fmt.Errorf("broker config: timeout %v exceeds max timeout %v", c.Timeout, c.MaxTimeout)
	}
	return nil
}
