package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// Message is a message delivered to a subscription handler.
type Message struct {
	Channel string
	Data    json.RawMessage
	Ext     json.RawMessage
	// ReplayID is the message's replay id (ext.replay or data.event.replayId),
	// 0 if it has none.
	ReplayID int64
}

// Handler receives messages of a subscription (see the package doc for
// ordering and the goroutine it runs on).
type Handler func(*Message)

// Error is a request that the server refused. Err is the Bayeux error
// (errors.As(err, **protocol.Error) finds it).
type Error struct {
	Op      string // "handshake", "publish", "subscribe", ...
	Channel string
	Err     *protocol.Error
	Advice  *protocol.Advice
}

func (e *Error) Error() string {
	if e.Channel != "" {
		return fmt.Sprintf("bayeux %s %s: %s", e.Op, e.Channel, e.Err)
	}
	return fmt.Sprintf("bayeux %s: %s", e.Op, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrClosed is returned by calls on a closed client.
var ErrClosed = errors.New("bayeux client closed")

// errTransport marks transport failures (retried with back-off).
type transportError struct{ err error }

func (e *transportError) Error() string { return "bayeux transport: " + e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// Client is a Bayeux client. Create it with Dial; stop it with Close.
type Client struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	nextID atomic.Int64
	// connectFailures counts connects that failed at the transport level.
	connectFailures atomic.Int64

	pendMu  sync.Mutex
	pending map[string]chan *wireMsg

	lp *longPolling
	cp *callbackPolling
	ws *wsTransport

	mu            sync.Mutex
	clientID      string
	connType      string
	advice        protocol.Advice
	ready         chan struct{} // closed while a session is established
	ackEnabled    bool
	lastAck       int64
	replayOn      bool
	replayIDs     map[string]int64
	replayRepeats int                        // deliveries dropped as repeats of a seen replay id
	resync        bool                       // replay without ack: a connect failed; resubscribe from the last ids
	subs          map[string][]*Subscription // by pattern, in subscription order
	subOrder      []string                   // patterns in first-subscription order
	stopped       error                      // terminal error (advice none, Close)
	handshakes    int
	closeCalled   bool

	dispMu    sync.Mutex
	dispQueue []*Message
	dispWake  chan struct{}
}

// Dial handshakes with the server and starts the connect loop. It retries
// transport errors with back-off until ctx ends; a handshake the server
// refuses is returned as an *Error.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	c := &Client{
		cfg:       cfg,
		log:       cfg.Logger,
		pending:   map[string]chan *wireMsg{},
		ready:     make(chan struct{}),
		replayIDs: map[string]int64{},
		subs:      map[string][]*Subscription{},
		dispWake:  make(chan struct{}, 1),
	}
	cp, err := newCallbackPolling(c)
	if err != nil {
		return nil, err
	}
	c.cp = cp
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.lp = &longPolling{c: c}
	c.ws = &wsTransport{c: c}
	// The first handshake runs on the caller's context and the client's.
	hctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-c.ctx.Done():
			stop()
		case <-hctx.Done():
		}
	}()
	attempt := 0
	// last is the last error the server (or the network) gave, not the
	// deadline's cut of the attempt under way: that tells why.
	var last error
	for {
		err := c.handshake(hctx)
		if err == nil {
			break
		}
		if hctx.Err() == nil || last == nil {
			last = err
		}
		var te *transportError
		if !errors.As(err, &te) || hctx.Err() != nil {
			c.shutdownTransports()
			c.cancel()
			if hctx.Err() != nil {
				return nil, fmt.Errorf("bayeux handshake: %w (last error: %v)", hctx.Err(), last)
			}
			return nil, err
		}
		if !sleepCtx(hctx, c.backoff(attempt)) {
			c.shutdownTransports()
			c.cancel()
			return nil, fmt.Errorf("bayeux handshake: %w (last error: %v)", hctx.Err(), last)
		}
		attempt++
	}
	c.wg.Add(2)
	go c.dispatchLoop()
	go c.connectLoop()
	return c, nil
}

// ClientID returns the current session's clientId ("" while handshaking).
func (c *Client) ClientID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clientID
}

// ConnectionType returns the negotiated connection type.
func (c *Client) ConnectionType() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connType
}

// AckEnabled reports whether the server accepted the ack extension.
func (c *Client) AckEnabled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ackEnabled
}

// Handshakes returns how many successful handshakes the client made.
func (c *Client) Handshakes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.handshakes
}

// Err returns why the client stopped (reconnect advice "none" or Close), or
// nil while it runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}

// ReplayRepeats returns how many deliveries were dropped because their
// replay id had been seen already (redelivery after the session moved).
func (c *Client) ReplayRepeats() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.replayRepeats
}

// LastReplayID returns the last replay id seen on channel.
func (c *Client) LastReplayID(ch string) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.replayIDs[ch]
	return id, ok
}

// ---- close ----

// Close disconnects (best effort, bounded by ctx), stops every goroutine of
// the client and waits for them. It must not be called from a handler.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closeCalled {
		c.mu.Unlock()
		c.wg.Wait()
		return nil
	}
	c.closeCalled = true
	id, ct := c.clientID, c.connType
	c.mu.Unlock()
	var err error
	if id != "" && c.Err() == nil {
		_, err = c.request(ctx, ct, c.cfg.RequestTimeout, &protocol.Message{Channel: protocol.ChannelDisconnect, ClientID: id})
	}
	c.stop(ErrClosed)
	c.cancel()
	c.shutdownTransports()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		<-done // every goroutine watches c.ctx: this is short
	}
	c.cfg.HTTPClient.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("disconnect: %w", err)
	}
	return nil
}

func (c *Client) shutdownTransports() {
	c.ws.shutdown()
}
