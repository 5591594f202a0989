package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
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

// Subscription is one Subscribe call.
type Subscription struct {
	c       *Client
	pattern string
	handler Handler
	replay  *int64
}

// Pattern returns the subscribed channel or pattern.
func (s *Subscription) Pattern() string { return s.pattern }

// Unsubscribe removes this subscription; the server is told when it was the
// last one on its pattern.
func (s *Subscription) Unsubscribe(ctx context.Context) error { return s.c.unsubscribe(ctx, s) }

// SubscribeOption configures a subscription.
type SubscribeOption func(*Subscription)

// WithReplayID subscribes from replay id (replay extension): -1 for new
// events only, -2 for everything retained, or the last id already seen.
func WithReplayID(id int64) SubscribeOption { return func(s *Subscription) { s.replay = &id } }

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
	for {
		err := c.handshake(hctx)
		if err == nil {
			break
		}
		var te *transportError
		if !errors.As(err, &te) || hctx.Err() != nil {
			c.shutdownTransports()
			c.cancel()
			if hctx.Err() != nil {
				return nil, fmt.Errorf("bayeux handshake: %w (last error: %v)", hctx.Err(), err)
			}
			return nil, err
		}
		if !sleepCtx(hctx, c.backoff(attempt)) {
			c.shutdownTransports()
			c.cancel()
			return nil, fmt.Errorf("bayeux handshake: %w (last error: %v)", hctx.Err(), err)
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

// ---- wire ----

type wireMsg struct {
	Channel                  string                     `json:"channel"`
	ID                       json.RawMessage            `json:"id,omitempty"`
	ClientID                 string                     `json:"clientId,omitempty"`
	Successful               *bool                      `json:"successful,omitempty"`
	Error                    string                     `json:"error,omitempty"`
	Advice                   *protocol.Advice           `json:"advice,omitempty"`
	Data                     json.RawMessage            `json:"data,omitempty"`
	Ext                      map[string]json.RawMessage `json:"ext,omitempty"`
	SupportedConnectionTypes []string                   `json:"supportedConnectionTypes,omitempty"`
}

func (m *wireMsg) ok() bool { return m.Successful != nil && *m.Successful }

func (m *wireMsg) bayeuxError(op, ch string) *Error {
	msg := m.Error
	if msg == "" {
		msg = "request failed"
	}
	pe, ok := protocol.ParseError(msg)
	if !ok {
		pe = &protocol.Error{Message: msg}
	}
	return &Error{Op: op, Channel: ch, Err: pe, Advice: m.Advice}
}

func idKey(raw json.RawMessage) string {
	s := string(raw)
	if len(s) >= 2 && s[0] == '"' {
		var v string
		if json.Unmarshal(raw, &v) == nil {
			return v
		}
	}
	return s
}

// handleIncoming routes replies to their waiters and queues deliveries, in
// the order of msgs. It is called with one transport response or frame.
func (c *Client) handleIncoming(msgs []*wireMsg) {
	var deliveries []*Message
	for _, m := range msgs {
		if m == nil || m.Channel == "" {
			continue
		}
		if m.Successful != nil || protocol.IsMeta(m.Channel) {
			if len(m.ID) == 0 {
				continue
			}
			c.pendMu.Lock()
			ch := c.pending[idKey(m.ID)]
			c.pendMu.Unlock()
			if ch != nil {
				select {
				case ch <- m:
				default:
				}
			}
			continue
		}
		d := &Message{Channel: m.Channel, Data: m.Data}
		if len(m.Ext) > 0 {
			d.Ext, _ = json.Marshal(m.Ext)
		}
		d.ReplayID = replayIDOf(m)
		deliveries = append(deliveries, d)
	}
	if len(deliveries) == 0 {
		return
	}
	// Replay delivery is at least once on the wire (a batch resent after
	// the session moved to another node may have been received already);
	// an event at or below the channel's last replay id is a repeat and is
	// dropped, which makes it exactly once for the handlers.
	c.mu.Lock()
	kept := deliveries[:0]
	for _, d := range deliveries {
		if d.ReplayID != 0 {
			if last, ok := c.replayIDs[d.Channel]; ok && d.ReplayID <= last {
				c.replayRepeats++
				continue
			}
			c.replayIDs[d.Channel] = d.ReplayID
		}
		kept = append(kept, d)
	}
	deliveries = kept
	c.mu.Unlock()
	if len(deliveries) == 0 {
		return
	}
	c.dispMu.Lock()
	c.dispQueue = append(c.dispQueue, deliveries...)
	c.dispMu.Unlock()
	select {
	case c.dispWake <- struct{}{}:
	default:
	}
}

func replayIDOf(m *wireMsg) int64 {
	if raw := m.Ext["replay"]; len(raw) > 0 {
		var id int64
		if json.Unmarshal(raw, &id) == nil {
			return id
		}
	}
	if len(m.Data) > 0 && m.Data[0] == '{' {
		var d struct {
			Event struct {
				ReplayID *int64 `json:"replayId"`
			} `json:"event"`
		}
		if json.Unmarshal(m.Data, &d) == nil && d.Event.ReplayID != nil {
			return *d.Event.ReplayID
		}
	}
	return 0
}

// ---- requests ----

// request sends msgs in one transport request of type transportName and
// waits for one reply per message (each message gets an id here), bounded
// by ctx and timeout.
func (c *Client) request(ctx context.Context, transportName string, timeout time.Duration, msgs ...*protocol.Message) ([]*wireMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	chans := make([]chan *wireMsg, len(msgs))
	keys := make([]string, len(msgs))
	c.pendMu.Lock()
	for i, m := range msgs {
		keys[i] = strconv.FormatInt(c.nextID.Add(1), 10)
		m.ID = json.RawMessage(strconv.Quote(keys[i]))
		chans[i] = make(chan *wireMsg, 1)
		c.pending[keys[i]] = chans[i]
	}
	c.pendMu.Unlock()
	defer func() {
		c.pendMu.Lock()
		for _, k := range keys {
			delete(c.pending, k)
		}
		c.pendMu.Unlock()
	}()
	body, err := json.Marshal(msgs)
	if err != nil {
		return nil, err
	}
	var dead <-chan struct{}
	var deadErr func() error
	switch transportName {
	case protocol.WebSocket:
		conn, err := c.ws.conn(ctx)
		if err != nil {
			return nil, err
		}
		if err := conn.send(ctx, body); err != nil {
			return nil, err
		}
		dead, deadErr = conn.done, conn.error
	case protocol.CallbackPolling:
		if err := c.cp.send(ctx, msgs, body); err != nil {
			return nil, err
		}
	default:
		if err := c.lp.post(ctx, body); err != nil {
			return nil, err
		}
	}
	out := make([]*wireMsg, len(msgs))
	for i, ch := range chans {
		if dead == nil {
			select {
			case r := <-ch:
				out[i] = r
			default:
				return nil, &transportError{fmt.Errorf("no reply to %s in the response", msgs[i].Channel)}
			}
			continue
		}
		select {
		case r := <-ch:
			out[i] = r
		case <-dead:
			select {
			case r := <-ch:
				out[i] = r
				continue
			default:
			}
			return nil, &transportError{deadErr()}
		case <-ctx.Done():
			if c.ctx.Err() != nil {
				return nil, ErrClosed
			}
			return nil, &transportError{fmt.Errorf("waiting for %s reply: %w", msgs[i].Channel, ctx.Err())}
		}
	}
	return out, nil
}

// session waits until a session is established and returns its clientId
// and connection type.
func (c *Client) session(ctx context.Context) (string, string, error) {
	for {
		c.mu.Lock()
		ready, id, ct, stopped := c.ready, c.clientID, c.connType, c.stopped
		c.mu.Unlock()
		if stopped != nil {
			return "", "", stopped
		}
		select {
		case <-ready:
			if id != "" {
				return id, ct, nil
			}
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-c.ctx.Done():
			return "", "", ErrClosed
		}
	}
}

func (c *Client) requestTimeout(ctx context.Context) time.Duration {
	if _, ok := ctx.Deadline(); ok {
		return 24 * time.Hour // the caller's deadline bounds it
	}
	return c.cfg.RequestTimeout
}

// Publish publishes data (marshalled with encoding/json; a json.RawMessage
// is sent as is) to a concrete channel and waits for the server's
// acknowledgement. A refusal is an *Error carrying the Bayeux error.
func (c *Client) Publish(ctx context.Context, ch string, data any) error {
	raw, ok := data.(json.RawMessage)
	if !ok {
		var err error
		if raw, err = json.Marshal(data); err != nil {
			return fmt.Errorf("publish %s: %w", ch, err)
		}
	}
	id, ct, err := c.session(ctx)
	if err != nil {
		return err
	}
	r, err := c.request(ctx, ct, c.requestTimeout(ctx), &protocol.Message{Channel: ch, ClientID: id, Data: raw})
	if err != nil {
		return fmt.Errorf("publish %s: %w", ch, err)
	}
	if !r[0].ok() {
		c.noteAdvice(id, r[0].Advice)
		return r[0].bayeuxError("publish", ch)
	}
	return nil
}

// Subscribe subscribes handler to pattern (a channel or a wildcard
// pattern). It returns when the server confirmed the subscription.
func (c *Client) Subscribe(ctx context.Context, pattern string, handler Handler, opts ...SubscribeOption) (*Subscription, error) {
	if handler == nil {
		return nil, errors.New("subscribe: nil handler")
	}
	if _, _, err := channel.Parse(pattern); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", pattern, err)
	}
	s := &Subscription{c: c, pattern: pattern, handler: handler}
	for _, o := range opts {
		o(s)
	}
	id, ct, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.subs[pattern]) == 0 {
		c.subOrder = append(c.subOrder, pattern)
	}
	c.subs[pattern] = append(c.subs[pattern], s)
	m := c.subscribeMsgLocked(id, pattern, s.replay)
	c.mu.Unlock()
	r, err := c.request(ctx, ct, c.requestTimeout(ctx), m)
	if err == nil && !r[0].ok() {
		c.noteAdvice(id, r[0].Advice)
		err = r[0].bayeuxError("subscribe", pattern)
	}
	if err != nil {
		c.removeSub(s)
		return nil, err
	}
	c.seedReplayIDs(r[0])
	return s, nil
}

// seedReplayIDs records, from a subscribe reply's ext.replay, the replay
// id each new stream starts after, for channels with no id seen yet: a
// later delivery at or below it is a repeat.
func (c *Client) seedReplayIDs(rep *wireMsg) {
	raw := rep.Ext["replay"]
	if len(raw) == 0 {
		return
	}
	var starts map[string]int64
	if json.Unmarshal(raw, &starts) != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch, id := range starts {
		if _, ok := c.replayIDs[ch]; !ok && id >= 0 {
			c.replayIDs[ch] = id
		}
	}
}

// resyncReplay resubscribes every concrete channel from the last replay id
// seen on it. A replay session without the ack extension learns nothing
// about a connect reply lost in transit (the server counts the next
// connect as its acknowledgement), so after a failed connect the client
// asks again for everything after what it has; repeats are dropped.
func (c *Client) resyncReplay(ctx context.Context) error {
	c.mu.Lock()
	id, ct := c.clientID, c.connType
	var msgs []*protocol.Message
	for _, p := range c.subOrder {
		if c.replayResumable(p) {
			msgs = append(msgs, c.subscribeMsgLocked(id, p, nil))
		}
	}
	c.mu.Unlock()
	if len(msgs) == 0 {
		return nil
	}
	rs, err := c.request(ctx, ct, c.requestTimeout(ctx), msgs...)
	if err != nil {
		return fmt.Errorf("replay resync: %w", err)
	}
	for i, r := range rs {
		if !r.ok() {
			if r.Advice != nil && r.Advice.Reconnect == protocol.ReconnectHandshake {
				return nil // the session is gone; the handshake resubscribes from the last ids
			}
			return fmt.Errorf("replay resync of %v: %w", msgs[i].Subscription.Names, r.bayeuxError("subscribe", msgs[i].Subscription.Names[0]))
		}
	}
	return nil
}

func (c *Client) subscribeMsgLocked(id, pattern string, replay *int64) *protocol.Message {
	m := &protocol.Message{Channel: protocol.ChannelSubscribe, ClientID: id, Subscription: protocol.Subscription{Names: []string{pattern}}}
	if !c.replayOn {
		return m
	}
	if channel.IsWildcard(pattern) {
		// Replay ids are per channel: the pattern takes -1/-2 and every
		// channel under it seen so far resumes after its last id.
		ids := map[string]int64{}
		for ch, id := range c.replayIDs {
			if !channel.IsWildcard(ch) && channel.Match(pattern, ch) {
				ids[ch] = id
			}
		}
		if replay != nil && *replay < 0 {
			ids[pattern] = *replay
		}
		if len(ids) > 0 {
			m.Ext, _ = json.Marshal(map[string]any{"replay": ids})
		}
		return m
	}
	var from *int64
	if v, ok := c.replayIDs[pattern]; ok {
		from = &v
	} else if replay != nil {
		from = replay
	}
	if from != nil {
		m.Ext, _ = json.Marshal(map[string]any{"replay": map[string]int64{pattern: *from}})
	}
	return m
}

// replayResumable reports whether a replay id was seen on pattern (a
// channel) or on a channel under it (a wildcard). c.mu is held.
func (c *Client) replayResumable(pattern string) bool {
	if !channel.IsWildcard(pattern) {
		_, ok := c.replayIDs[pattern]
		return ok
	}
	for ch := range c.replayIDs {
		if channel.Match(pattern, ch) {
			return true
		}
	}
	return false
}

// removeSub forgets s and reports whether its pattern has no subscription left.
func (c *Client) removeSub(s *Subscription) (last, found bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	list := c.subs[s.pattern]
	for i, x := range list {
		if x == s {
			list = append(list[:i:i], list[i+1:]...)
			found = true
			break
		}
	}
	if len(list) == 0 {
		delete(c.subs, s.pattern)
		for i, p := range c.subOrder {
			if p == s.pattern {
				c.subOrder = append(c.subOrder[:i:i], c.subOrder[i+1:]...)
				break
			}
		}
		return true, found
	}
	c.subs[s.pattern] = list
	return false, found
}

func (c *Client) unsubscribe(ctx context.Context, s *Subscription) error {
	last, found := c.removeSub(s)
	if !found || !last {
		return nil
	}
	id, ct, err := c.session(ctx)
	if err != nil {
		return err
	}
	r, err := c.request(ctx, ct, c.requestTimeout(ctx), &protocol.Message{
		Channel: protocol.ChannelUnsubscribe, ClientID: id, Subscription: protocol.Subscription{Names: []string{s.pattern}}})
	if err != nil {
		return fmt.Errorf("unsubscribe %s: %w", s.pattern, err)
	}
	if !r[0].ok() {
		return r[0].bayeuxError("unsubscribe", s.pattern)
	}
	return nil
}

// Unsubscribe removes every subscription on pattern.
func (c *Client) Unsubscribe(ctx context.Context, pattern string) error {
	c.mu.Lock()
	list := append([]*Subscription(nil), c.subs[pattern]...)
	c.mu.Unlock()
	var err error
	for _, s := range list {
		err = errors.Join(err, s.Unsubscribe(ctx))
	}
	return err
}

// noteAdvice records advice that arrived on a non-connect reply; a
// "handshake" advice is acted on by the connect loop at its next turn.
func (c *Client) noteAdvice(id string, a *protocol.Advice) {
	if a == nil {
		return
	}
	c.mu.Lock()
	if id != c.clientID {
		c.mu.Unlock()
		return // advice about a session already replaced
	}
	mergeAdvice(&c.advice, a)
	c.mu.Unlock()
}

func mergeAdvice(dst *protocol.Advice, a *protocol.Advice) {
	if a.Reconnect != "" {
		dst.Reconnect = a.Reconnect
	}
	if a.Interval != nil {
		dst.Interval = a.Interval
	}
	if a.Timeout != nil {
		dst.Timeout = a.Timeout
	}
	if a.MaxInterval != nil {
		dst.MaxInterval = a.MaxInterval
	}
	dst.MultipleClients = a.MultipleClients
}

// ---- handshake and connect loop ----

// closing reports whether Close has been called.
func (c *Client) closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCalled
}

func (c *Client) handshakeMsg() *protocol.Message {
	ext := map[string]any{}
	for k, v := range c.cfg.HandshakeExt {
		ext[k] = v
	}
	if !c.cfg.DisableAck {
		ext["ack"] = true
	}
	if c.cfg.Replay {
		ext["replay"] = true
	}
	m := &protocol.Message{Channel: protocol.ChannelHandshake, Version: protocol.Version, MinimumVersion: protocol.Version,
		SupportedConnectionTypes: c.cfg.Transports}
	if len(ext) > 0 {
		m.Ext, _ = json.Marshal(ext)
	}
	return m
}

// handshake performs one handshake (trying the transports in order for the
// handshake itself), negotiates the connection type and resubscribes.
func (c *Client) handshake(ctx context.Context) error {
	if c.closing() {
		return ErrClosed
	}
	var r []*wireMsg
	var err error
	for i, t := range c.cfg.Transports {
		r, err = c.request(ctx, t, c.cfg.RequestTimeout, c.handshakeMsg())
		if err == nil || ctx.Err() != nil {
			break
		}
		if i < len(c.cfg.Transports)-1 {
			c.log.Debug("bayeux handshake failed, trying the next transport", "transport", t, "err", err)
		}
	}
	if err != nil {
		return err
	}
	rep := r[0]
	if !rep.ok() {
		e := rep.bayeuxError("handshake", "")
		if rep.Advice != nil && rep.Advice.Reconnect == protocol.ReconnectNone {
			return e
		}
		if rep.Advice == nil || rep.Advice.Reconnect == "" {
			return e // no advice: do not hammer the server
		}
		return &transportError{e} // retry advice: back off and retry
	}
	connType := ""
	for _, mine := range c.cfg.Transports {
		for _, theirs := range rep.SupportedConnectionTypes {
			if mine == theirs {
				connType = mine
				break
			}
		}
		if connType != "" {
			break
		}
	}
	if connType == "" {
		return &Error{Op: "handshake", Err: protocol.NewError(protocol.CodeConnectionType, "No common connection type")}
	}
	if rep.ClientID == "" {
		return &Error{Op: "handshake", Err: protocol.NewError(protocol.CodeBadRequest, "Handshake reply without clientId")}
	}
	if c.closing() {
		// Close began while this handshake was in flight: end the new
		// session now rather than leave it for the server to sweep.
		_, _ = c.request(ctx, connType, c.cfg.RequestTimeout, &protocol.Message{Channel: protocol.ChannelDisconnect, ClientID: rep.ClientID})
		return ErrClosed
	}
	var ack, replay bool
	_ = json.Unmarshal(rep.Ext["ack"], &ack)
	_ = json.Unmarshal(rep.Ext["replay"], &replay)
	c.mu.Lock()
	c.advice = protocol.Advice{}
	if rep.Advice != nil {
		mergeAdvice(&c.advice, rep.Advice)
	}
	c.advice.Reconnect = protocol.ReconnectRetry
	c.clientID = rep.ClientID
	c.connType = connType
	c.ackEnabled = ack && !c.cfg.DisableAck
	c.lastAck = 0
	c.resync = false // the resubscription below starts from the last replay ids
	c.replayOn = replay && c.cfg.Replay
	c.handshakes++
	var resub []*protocol.Message
	for _, p := range c.subOrder {
		var from *int64
		if l := c.subs[p]; len(l) > 0 {
			from = l[0].replay
		}
		resub = append(resub, c.subscribeMsgLocked(rep.ClientID, p, from))
	}
	c.mu.Unlock()
	if connType != protocol.WebSocket {
		c.ws.closeConn()
	}
	if len(resub) > 0 {
		rs, err := c.request(ctx, connType, c.cfg.RequestTimeout, resub...)
		if err != nil {
			return fmt.Errorf("resubscribe: %w", err)
		}
		for i, r := range rs {
			c.seedReplayIDs(r)
			if !r.ok() {
				// Keep the handler: the pattern stays in the client's set and
				// is tried again on the next handshake.
				c.log.Warn("bayeux resubscribe refused", "subscription", resub[i].Subscription.Names, "error", r.Error)
			}
		}
	}
	c.mu.Lock()
	select {
	case <-c.ready:
	default:
		close(c.ready)
	}
	c.mu.Unlock()
	return nil
}

// lose marks the session as gone: callers wait for the next handshake.
func (c *Client) lose() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clientID = ""
	select {
	case <-c.ready:
		c.ready = make(chan struct{})
	default:
	}
}

func (c *Client) stop(err error) {
	c.mu.Lock()
	if c.stopped == nil {
		c.stopped = err
	}
	select {
	case <-c.ready:
	default:
		close(c.ready) // wake waiters: they see stopped
	}
	c.mu.Unlock()
}

func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.BackoffMin
	for i := 0; i < attempt && d < c.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.cfg.BackoffMax)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (c *Client) connectLoop() {
	defer c.wg.Done()
	ctx := c.ctx
	attempt := 0
	needHandshake := false
	for ctx.Err() == nil {
		if needHandshake {
			c.lose()
			if err := c.handshake(ctx); err != nil {
				if ctx.Err() != nil || errors.Is(err, ErrClosed) {
					return
				}
				var te *transportError
				if !errors.As(err, &te) {
					// Refused (advice none, no advice, no common type).
					c.log.Error("bayeux handshake refused; client stopped", "err", err)
					c.stop(err)
					return
				}
				c.log.Debug("bayeux handshake failed", "err", err, "attempt", attempt)
				if !sleepCtx(ctx, c.backoff(attempt)) {
					return
				}
				attempt++
				continue
			}
			needHandshake = false
		}
		c.mu.Lock()
		resync := c.resync
		c.resync = false
		c.mu.Unlock()
		if resync && !needHandshake {
			// Before the next connect, which the server takes as the
			// acknowledgement of the reply that was lost.
			if err := c.resyncReplay(ctx); err != nil {
				c.log.Debug("bayeux replay resync failed", "err", err, "attempt", attempt)
				c.mu.Lock()
				c.resync = true
				c.mu.Unlock()
				if !sleepCtx(ctx, c.backoff(attempt)) {
					return
				}
				attempt++
				continue
			}
		}
		c.mu.Lock()
		id, ct := c.clientID, c.connType
		adv := c.advice
		m := &protocol.Message{Channel: protocol.ChannelConnect, ClientID: id, ConnectionType: ct}
		if c.ackEnabled {
			m.Ext, _ = json.Marshal(map[string]int64{"ack": c.lastAck})
		}
		c.mu.Unlock()
		if adv.Reconnect == protocol.ReconnectHandshake {
			needHandshake = true
			continue
		}
		timeout := c.cfg.DefaultTimeout
		if adv.Timeout != nil {
			timeout = time.Duration(*adv.Timeout) * time.Millisecond
		}
		r, err := c.request(ctx, ct, timeout+c.cfg.TimeoutMargin, m)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.connectFailures.Add(1)
			c.log.Debug("bayeux connect failed", "err", err, "attempt", attempt)
			c.mu.Lock()
			if c.replayOn && !c.ackEnabled {
				c.resync = true
			}
			c.mu.Unlock()
			if ct == protocol.WebSocket {
				c.ws.closeConn() // a socket that missed its deadline is dead
			}
			if !sleepCtx(ctx, c.backoff(attempt)) {
				return
			}
			attempt++
			continue
		}
		rep := r[0]
		c.mu.Lock()
		if rep.Advice != nil {
			mergeAdvice(&c.advice, rep.Advice)
		}
		adv = c.advice
		if rep.ok() && c.ackEnabled {
			var a int64
			// Batch ids only grow within a session; never step back.
			if json.Unmarshal(rep.Ext["ack"], &a) == nil && a > c.lastAck {
				c.lastAck = a
			}
		}
		c.mu.Unlock()
		interval := time.Duration(0)
		if adv.Interval != nil {
			interval = time.Duration(*adv.Interval) * time.Millisecond
		}
		switch adv.Reconnect {
		case protocol.ReconnectNone:
			err := error(ErrClosed)
			if !rep.ok() {
				err = rep.bayeuxError("connect", "")
			}
			c.stop(err)
			return
		case protocol.ReconnectHandshake:
			needHandshake = true
			attempt = 0
			if !sleepCtx(ctx, max(interval, 0)) {
				return
			}
			continue
		}
		if !rep.ok() {
			// Refused without handshake advice: back off, then retry.
			c.log.Debug("bayeux connect refused", "error", rep.Error)
			if !sleepCtx(ctx, max(interval, c.backoff(attempt))) {
				return
			}
			attempt++
			continue
		}
		attempt = 0
		if interval < 0 {
			c.stop(errors.New("bayeux: server advised not to reconnect (negative interval)"))
			return
		}
		if !sleepCtx(ctx, interval) {
			return
		}
	}
}

// ---- dispatcher ----

func (c *Client) dispatchLoop() {
	defer c.wg.Done()
	var buf []string
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.dispWake:
		}
		c.dispMu.Lock()
		batch := c.dispQueue
		c.dispQueue = nil
		c.dispMu.Unlock()
		for _, m := range batch {
			if c.ctx.Err() != nil {
				return
			}
			buf = channel.Candidates(buf[:0], m.Channel)
			var hs []Handler
			c.mu.Lock()
			for _, p := range c.subOrder {
				for _, cand := range buf {
					if cand == p {
						for _, s := range c.subs[p] {
							hs = append(hs, s.handler)
						}
						break
					}
				}
			}
			c.mu.Unlock()
			for _, h := range hs {
				h(m)
			}
		}
	}
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
