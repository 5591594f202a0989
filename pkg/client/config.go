package client

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// Config configures a Client. Zero fields take the documented defaults.
type Config struct {
	// URL of the Bayeux endpoint (http:// or https://). The websocket URL is
	// derived from it (ws:// or wss://) unless WebSocketURL is set.
	URL          string
	WebSocketURL string
	// Transports in order of preference: "websocket", "long-polling",
	// "callback-polling" (default: websocket, long-polling).
	Transports []string
	// HTTPClient for long-polling, callback-polling and the websocket dial
	// (default: a new http.Client without a cookie jar).
	HTTPClient *http.Client
	// Header is added to every HTTP request and to the websocket dial.
	Header http.Header

	// DisableAck turns off the acknowledgement extension.
	DisableAck bool
	// Replay turns on the replay extension.
	Replay bool
	// HandshakeExt is merged into the handshake's ext.
	HandshakeExt map[string]any

	// TimeoutMargin is added to advice.timeout to bound a connect
	// (default 10s). DefaultTimeout is used while the server gave no
	// advice.timeout (default 30s). RequestTimeout bounds other requests
	// that the caller's context does not bound (default 30s).
	TimeoutMargin  time.Duration
	DefaultTimeout time.Duration
	RequestTimeout time.Duration
	// Back-off after transport errors: exponential from BackoffMin to
	// BackoffMax (defaults 100ms and 10s), each wait jittered in [d/2, d].
	BackoffMin, BackoffMax time.Duration
	// MaxMessageBytes bounds one HTTP response body or websocket frame
	// (default 16 MiB).
	MaxMessageBytes int64
	// MaxURLLength bounds the URL of one callback-polling request (default
	// 8000 bytes, which common proxies accept). A batch that does not fit is
	// split into several requests; a single message that does not fit fails.
	MaxURLLength int
	// Logger (default: slog.Default()).
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.URL == "" {
		return errors.New("client: Config.URL is required")
	}
	if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		return fmt.Errorf("client: URL %q must be http:// or https://", c.URL)
	}
	if c.WebSocketURL == "" {
		c.WebSocketURL = "ws" + strings.TrimPrefix(c.URL, "http")
	}
	if len(c.Transports) == 0 {
		c.Transports = []string{protocol.WebSocket, protocol.LongPolling}
	}
	for _, t := range c.Transports {
		if t != protocol.WebSocket && t != protocol.LongPolling && t != protocol.CallbackPolling {
			return fmt.Errorf("client: unsupported transport %q", t)
		}
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.TimeoutMargin, 10*time.Second)
	def(&c.DefaultTimeout, 30*time.Second)
	def(&c.RequestTimeout, 30*time.Second)
	def(&c.BackoffMin, 100*time.Millisecond)
	def(&c.BackoffMax, 10*time.Second)
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 16 << 20
	}
	if c.MaxURLLength <= 0 {
		c.MaxURLLength = 8000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
