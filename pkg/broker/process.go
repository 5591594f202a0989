package broker

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// request is one transport request (HTTP request or websocket frame).
type request struct {
	info      RequestInfo
	browserID string // BAYEUX_BROWSER cookie; empty for websocket
	msgs      []*protocol.Message
	received  time.Time
	// keepPending: the caller settles the result's pending publishes
	// (a websocket, to keep the publishes of several frames in flight
	// together); otherwise process settles them before it returns.
	keepPending bool
}

// result is what processing a request produced. replies are in message
// order; connect, if set, is a /meta/connect to hold (or complete at once)
// whose reply and deliveries follow the replies.
type result struct {
	replies   []*protocol.Reply
	connect   *heldConnect
	session   *Session // the session the request acted for, if any
	handshook bool     // a new session was created
	refused   int      // publishes refused for their rate (see throttle)
	// pending are publishes queued in the engine whose replies follow
	// replies (settle completes them, in order).
	pending []pendingPublish
}

// pendingPublish is a publish queued in the engine, not yet acknowledged.
type pendingPublish struct {
	s    *Session
	m    *protocol.Message
	r    *protocol.Reply
	done func() // completes r
}

// settle waits for res's pending publishes, in order, and appends their
// replies.
func (b *Broker) settle(ctx context.Context, res *result) {
	for i, p := range res.pending {
		p.done()
		b.outgoing(ctx, p.s, p.m, p.r)
		b.observeReply(p.r)
		res.replies = append(res.replies, p.r)
		res.pending[i] = pendingPublish{}
	}
	res.pending = res.pending[:0]
}

// deferrable reports whether m may be processed while earlier publishes
// of its request are still pending: a publish to a broadcast channel by a
// known session. Any other message waits for them (a subscribe after a
// publish, say, keeps its meaning).
func deferrable(s *Session, m *protocol.Message) bool {
	return s != nil && m.Invalid == nil && !protocol.IsMeta(m.Channel) && !protocol.IsService(m.Channel)
}

// process handles every message of a request served here (Broker.serve)
// except the waiting part of a /meta/connect: that comes back as
// result.connect, a heldConnect the transport holds until it is due.
func (b *Broker) process(ctx context.Context, req *request) *result {
	res := &result{}
	crossed := false // a connect of a session disconnected moments ago
	for _, m := range req.msgs {
		m.Received = req.received
	}
	// A request carrying a handshake: only the handshake is processed.
	if i := slices.IndexFunc(req.msgs, func(m *protocol.Message) bool {
		return m.Channel == protocol.ChannelHandshake && m.Invalid == nil
	}); i >= 0 {
		r, s := b.handshake(ctx, req, req.msgs[i])
		if s != nil && b.store != nil {
			// Cluster mode: the session is adoptable from its first reply.
			// With Redis unreachable it still works here; the sweeper
			// writes its record once Redis is back.
			if err := b.save(ctx, s); err != nil {
				b.log.Warn("handshake: session record not written yet", "session", s.id, "err", err)
			}
		}
		b.observeReply(r)
		res.replies = append(res.replies, r)
		res.session = s
		res.handshook = s != nil
		return res
	}
	if b.cfg.ReorderWindow > 0 {
		b.arrive(req.msgs)
	}
	for _, m := range req.msgs {
		var s *Session
		if m.ClientID != "" {
			s, _ = b.Session(m.ClientID)
		}
		var n uint64
		ordered := false
		if s != nil && b.cfg.ReorderWindow > 0 {
			var skipped bool
			w := b.cfg.ReorderWindow
			if n, ordered, skipped = s.seq.Await(ctx, m.ID, req.received.Add(w), req.received.Add(reorderArrivedWait*w)); skipped {
				b.log.Debug("message order gap skipped", "session", s.id, "id", m.ID, "window", b.cfg.ReorderWindow.String())
			}
		}
		// Every message counts for staleness; only a connect acts on it.
		stale := s != nil && s.seq.Stale(m.ID)
		if b.processMessage(ctx, req, res, s, m, stale) {
			crossed = true
		}
		if ordered {
			s.seq.Done(n)
		}
	}
	if !req.keepPending {
		b.settle(ctx, res)
	}
	if crossed {
		delayCrossedConnect(ctx)
	}
	return res
}

// arrive tells the sequencers of the messages' sessions that they are
// here, before any of them waits for its turn (sequencer.Arrive).
func (b *Broker) arrive(msgs []*protocol.Message) {
	var s *Session
	for _, m := range msgs {
		if m.ClientID == "" {
			continue
		}
		if s == nil || s.id != m.ClientID {
			if s, _ = b.Session(m.ClientID); s == nil {
				continue
			}
		}
		s.seq.Arrive(m.ID)
	}
}

// processMessage handles one message of a request (not a handshake) for
// session s (nil if unknown) and appends its reply or held connect to
// res. It reports whether the message is a connect of a session
// disconnected moments ago (see delayCrossedConnect). stale: the session
// already processed a later message of its client (sequencer.Stale).
func (b *Broker) processMessage(ctx context.Context, req *request, res *result, s *Session, m *protocol.Message, stale bool) (crossed bool) {
	if !deferrable(s, m) {
		b.settle(ctx, res)
	}
	if m.Invalid != nil {
		r := protocol.ReplyTo(m)
		r.Fail(m.Invalid)
		b.observeReply(r)
		res.replies = append(res.replies, r)
		return false
	}
	if m.ClientID == "" {
		r := protocol.ReplyTo(m)
		r.Fail(protocol.NewError(protocol.CodeNoClientID, "No client ID"))
		r.Advice = &protocol.Advice{Reconnect: protocol.ReconnectHandshake, Interval: protocol.Int64(0)}
		b.observeReply(r)
		res.replies = append(res.replies, r)
		return false
	}
	if s == nil {
		r := unknownClientReply(m)
		switch why := b.tombstone(m.ClientID); {
		case why == errDisconnected:
			crossed = m.Channel == protocol.ChannelConnect
		case why == errEnded:
			r.Fail(why)
			r.Advice = &protocol.Advice{Reconnect: protocol.ReconnectNone}
		case why != nil:
			r.Fail(why) // the session ended for a reason the client must learn
		}
		b.observeReply(r)
		res.replies = append(res.replies, r)
		return crossed
	}
	res.session = s
	s.touch()
	if err := b.incoming(ctx, s, m); err != nil {
		b.settle(ctx, res)
		r := protocol.ReplyTo(m)
		r.Fail(err)
		b.outgoing(ctx, s, m, r)
		b.observeReply(r)
		res.replies = append(res.replies, r)
		return false
	}
	if !deferrable(s, m) { // an extension may have changed the channel
		b.settle(ctx, res)
	}
	if m.Channel == protocol.ChannelConnect {
		if res.connect != nil { // two connects in one request: end the first
			res.connect.answer(false) // observes its reply
			res.replies = append(res.replies, res.connect.reply)
		}
		hc, r := b.connect(ctx, req, s, m, stale)
		if r != nil {
			b.observeReply(r)
			res.replies = append(res.replies, r)
		} else {
			res.connect = hc
		}
		return false
	}
	var r *protocol.Reply
	switch m.Channel {
	case protocol.ChannelSubscribe:
		r = b.subscribe(ctx, s, m, true)
	case protocol.ChannelUnsubscribe:
		r = b.subscribe(ctx, s, m, false)
	case protocol.ChannelDisconnect:
		r = b.disconnect(s, m)
	default:
		if stale && b.cfg.ReorderWindow > 0 && s.seq.Late(m.ID) {
			// Its client sent it before a message already processed, and
			// has given up on it (it sat in a frozen node or a closed
			// connection, longer than the reorder window): delivered now
			// it would reach subscribers after its publisher's later
			// publications. Refused instead; the client, if it still
			// waits, learns that it failed. (Without a reorder window,
			// messages of concurrent requests are done as they come, and
			// a stale one is only the other request's: delivered.)
			r = protocol.ReplyTo(m)
			r.Fail(protocol.NewError(protocol.CodeLate, "Message arrived after later messages of its client", m.Channel))
			b.settle(ctx, res)
			break
		}
		var limited bool
		var done func()
		if r, limited, done = b.publish(ctx, s, m); limited {
			res.refused++
		}
		if done != nil {
			res.pending = append(res.pending, pendingPublish{s: s, m: m, r: r, done: done})
			return crossed
		}
		b.settle(ctx, res)
	}
	b.outgoing(ctx, s, m, r)
	b.observeReply(r)
	res.replies = append(res.replies, r)
	return crossed
}

// crossedConnectDelay holds the 402 reply to a /meta/connect of a session
// its client disconnected moments ago (a tombstone says so). A client that
// sends its disconnect while a new connect is on the way may see the two
// reach the node in the other order; answered at once, the connect's 402
// could overtake the disconnect's reply on the way back, and the CometD
// client then aborts its pending disconnect and reports it failed. Held
// this long, the 402 comes second.
const crossedConnectDelay = 250 * time.Millisecond

func delayCrossedConnect(ctx context.Context) {
	t := time.NewTimer(crossedConnectDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func unknownClientReply(m *protocol.Message) *protocol.Reply {
	r := protocol.ReplyTo(m)
	r.Fail(unknownClient(m.ClientID))
	r.Advice = &protocol.Advice{Reconnect: protocol.ReconnectHandshake, Interval: protocol.Int64(0)}
	return r
}

func (b *Broker) incoming(ctx context.Context, s *Session, m *protocol.Message) *protocol.Error {
	for _, e := range b.cfg.Extensions {
		if err := e.Incoming(ctx, s, m); err != nil {
			return err
		}
	}
	return nil
}

func (b *Broker) outgoing(ctx context.Context, s *Session, m *protocol.Message, r *protocol.Reply) {
	for i := len(b.cfg.Extensions) - 1; i >= 0; i-- {
		b.cfg.Extensions[i].Outgoing(ctx, s, m, r)
	}
}

func (b *Broker) ms(d time.Duration) *int64 { return protocol.Int64(d.Milliseconds()) }

func (b *Broker) handshake(ctx context.Context, req *request, m *protocol.Message) (*protocol.Reply, *Session) {
	r := protocol.ReplyTo(m)
	r.Version = protocol.Version
	r.SupportedConnectionTypes = b.cfg.Transports
	fail := func(err *protocol.Error, reconnect string) (*protocol.Reply, *Session) {
		r.Fail(err)
		r.Advice = &protocol.Advice{Reconnect: reconnect, Interval: b.ms(b.cfg.Interval)}
		if reconnect == protocol.ReconnectRetry {
			r.Advice.Interval = protocol.Int64(1000 + rand.Int64N(2000))
		}
		b.outgoing(ctx, nil, m, r)
		b.obs.Handshake(false)
		return r, nil
	}
	if b.shuttingDown.Load() {
		return fail(protocol.NewError(protocol.CodeServerUnavailable, "Node shutting down"), protocol.ReconnectRetry)
	}
	if err := b.incoming(ctx, nil, m); err != nil {
		return fail(err, protocol.ReconnectNone)
	}
	if m.Version == "" {
		return fail(protocol.NewError(protocol.CodeBadRequest, "Missing version"), protocol.ReconnectNone)
	}
	if major(m.Version) != 1 || (m.MinimumVersion != "" && major(m.MinimumVersion) > 1) {
		return fail(protocol.NewError(protocol.CodeVersion, "Unsupported version", m.Version), protocol.ReconnectNone)
	}
	if len(m.SupportedConnectionTypes) == 0 {
		return fail(protocol.NewError(protocol.CodeBadRequest, "Missing supportedConnectionTypes"), protocol.ReconnectNone)
	}
	common := false
	for _, t := range m.SupportedConnectionTypes {
		if b.supported[t] {
			common = true
			break
		}
	}
	if !common {
		return fail(protocol.NewError(protocol.CodeConnectionType, "No common connection type"), protocol.ReconnectNone)
	}
	if err := b.cfg.Policy.CanHandshake(ctx, req.info, m); err != nil {
		// A denial stops the client ("none": never a retry loop); an
		// unavailable authenticator (503) is worth retrying, after a
		// jittered pause.
		if err.Code == protocol.CodeServerUnavailable {
			return fail(err, protocol.ReconnectRetry)
		}
		return fail(err, protocol.ReconnectNone)
	}
	ipLease, ok := b.lim.ipSessions.acquire(hostOf(req.info.RemoteAddr), b.cfg.MaxSessionsPerIP)
	if !ok {
		b.limitRefused(LimitSessionsPerIP, hostOf(req.info.RemoteAddr), b.cfg.MaxSessionsPerIP)
		r.Fail(protocol.NewError(protocol.CodeTooMany, "Too many sessions from this address", strconv.Itoa(b.cfg.MaxSessionsPerIP)))
		r.Advice = &protocol.Advice{Reconnect: protocol.ReconnectRetry, Interval: protocol.Int64(10000)}
		b.outgoing(ctx, nil, m, r)
		return r, nil
	}
	browserLease, ok := b.lim.browserSessions.acquire(req.browserID, b.cfg.MaxSessionsPerBrowser)
	if !ok {
		ipLease.release()
		r.Fail(protocol.NewError(protocol.CodeTooMany, "Too many sessions for this browser", strconv.Itoa(b.cfg.MaxSessionsPerBrowser)))
		r.Advice = &protocol.Advice{Reconnect: protocol.ReconnectRetry, Interval: protocol.Int64(10000)}
		b.outgoing(ctx, nil, m, r)
		return r, nil
	}
	s := newSession(b, req.info, req.browserID)
	s.ipLease, s.browserLease = ipLease, browserLease
	s.seq.Start(m.ID, m.MinimumVersion == "")
	// Faye's family resends a connect with the same id (see implicitAck).
	s.sameIDRetry = m.MinimumVersion == ""
	b.sessions.add(s) // a new random id: never taken
	b.metrics.handshakes.Add(1)
	b.obs.SessionOpened(req.info.Transport)
	b.obs.Handshake(true)
	r.ClientID = s.id
	r.Succeed()
	r.Advice = &protocol.Advice{
		Reconnect:   protocol.ReconnectRetry,
		Interval:    b.ms(b.cfg.Interval),
		Timeout:     b.ms(b.cfg.Timeout),
		MaxInterval: b.ms(b.cfg.MaxInterval),
	}
	b.outgoing(ctx, s, m, r)
	return r, s
}

// major returns the major version number of "1.0"-style versions, or -1.
func major(v string) int {
	n := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '.' {
			if i == 0 {
				return -1
			}
			return n
		}
		if c < '0' || c > '9' || n > 1000 {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	if v == "" {
		return -1
	}
	return n
}

// connect validates a /meta/connect and starts holding it. A non-nil reply
// means it was answered at once (an error, or a stale connect).
//
// A stale connect (its client sent later messages, which the session
// already processed: it sat in a frozen node, or in a connection its
// client gave up on) is answered at once, successful and empty, without
// a batch id: answered normally it would take the next batch into a reply
// nobody reads, and with replay without the ack extension the client's
// next connect would acknowledge that batch. It neither acknowledges nor
// delivers, nor replaces the session's current connect.
func (b *Broker) connect(ctx context.Context, req *request, s *Session, m *protocol.Message, stale bool) (*heldConnect, *protocol.Reply) {
	b.metrics.connects.Add(1)
	b.obs.Connect()
	r := protocol.ReplyTo(m)
	r.ClientID = s.id
	if m.ConnectionType == "" {
		r.Fail(protocol.NewError(protocol.CodeBadRequest, "Missing connectionType"))
		b.outgoing(ctx, s, m, r)
		return nil, r
	}
	if !b.supported[m.ConnectionType] {
		r.Fail(protocol.NewError(protocol.CodeConnectionType, "Unsupported connection type", m.ConnectionType))
		b.outgoing(ctx, s, m, r)
		return nil, r
	}
	if stale {
		b.log.Debug("stale connect answered empty", "session", s.id, "id", string(m.ID))
		r.Succeed()
		r.Advice = &protocol.Advice{Reconnect: protocol.ReconnectRetry, Interval: protocol.Int64(0)}
		return nil, r
	}
	timeout := b.cfg.Timeout
	if m.Advice != nil && m.Advice.Timeout != nil {
		timeout = min(max(time.Duration(*m.Advice.Timeout)*time.Millisecond, 0), b.cfg.MaxTimeout)
	}
	// The advice is for the connects to come. One that asked for an
	// immediate answer (timeout 0: CometD's first connect, Faye's connect
	// batched with other messages) is advised the configured timeout, as
	// CometD's and Faye's servers do: clients time their next connect by
	// it (Faye gives up after 1.2 × advice.timeout, 6 s when it is 0) and
	// one that gives up on a held connect closes its websocket or aborts
	// its request, losing deliveries on their way (a silent gap for a
	// plain session).
	advised := timeout
	if advised == 0 {
		advised = b.cfg.Timeout
	}
	r.Advice = &protocol.Advice{Reconnect: protocol.ReconnectRetry, Interval: b.ms(b.cfg.Interval), Timeout: b.ms(advised)}
	if b.adoptionGap(s) {
		r.Fail(errAdoptedGap)
		r.Advice = &protocol.Advice{Reconnect: protocol.ReconnectHandshake, Interval: protocol.Int64(0)}
		b.outgoing(ctx, s, m, r)
		return nil, r
	}
	s.implicitAck(string(m.ID))
	if err := b.catchUp(ctx, s); err != nil {
		b.log.Warn("adopted session not caught up", "session", s.id, "err", err)
		r.Fail(protocol.NewError(protocol.CodeServerUnavailable, "Session recovery pending: backplane unavailable"))
		r.Advice = &protocol.Advice{Reconnect: protocol.ReconnectRetry, Interval: protocol.Int64(500 + rand.Int64N(1000))}
		b.outgoing(ctx, s, m, r)
		return nil, r
	}
	b.rewriteExact(ctx, s)
	hc := &heldConnect{b: b, s: s, m: m, reply: r, timeout: timeout}
	first := s.markConnected()
	if first || timeout == 0 || b.shuttingDown.Load() {
		hc.immediate = true
	}
	if req.browserID != "" && req.info.Transport != protocol.WebSocket {
		// One held HTTP connect per browser: another one (a second tab)
		// is answered at once with multiple-clients advice.
		multiple := b.lim.browserHeld.count(req.browserID) > 0
		if !multiple && !hc.immediate {
			hc.browser, multiple = b.lim.browserHeld.acquire(req.browserID, 1)
			multiple = !multiple
		}
		if multiple {
			hc.immediate = true
			r.Advice.MultipleClients = true
			r.Advice.Interval = b.ms(b.cfg.MultipleClientsInterval)
		}
	}
	if !hc.immediate && req.info.Transport != protocol.WebSocket {
		ipLease, ok := b.lim.ipHeld.acquire(hostOf(req.info.RemoteAddr), b.cfg.MaxHeldPerIP)
		if !ok {
			b.limitRefused(LimitHeldPerIP, hostOf(req.info.RemoteAddr), b.cfg.MaxHeldPerIP)
			hc.browser.release()
			r.Fail(protocol.NewError(protocol.CodeTooMany, "Too many held connections from this address", strconv.Itoa(b.cfg.MaxHeldPerIP)))
			r.Advice = &protocol.Advice{Reconnect: protocol.ReconnectRetry, Interval: protocol.Int64(1000)}
			b.outgoing(ctx, s, m, r)
			return nil, r
		}
		hc.ip = ipLease
	}
	hc.w = s.beginConnect(req.info.Transport, string(m.ID))
	if !hc.immediate {
		hc.held = true
		b.obs.HeldConnect(1)
	}
	return hc, nil
}
