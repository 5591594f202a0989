package broker

import (
	"context"
	"errors"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
	"github.com/bayeux-cluster/bayeux/pkg/broker/wsframe"
)

// wsWriteTimeout bounds one frame write; a client that cannot take a frame
// in this time is disconnected.
const wsWriteTimeout = 10 * time.Second

// wsConn is one websocket. It has no goroutine of its own while idle:
//
//   - Reading: a goroutine reads and processes frames while bytes arrive,
//     then parks the socket in the broker's readPoller and ends; the poller
//     starts a new one when the socket turns readable. Where parking is not
//     possible (TLS, no epoll) the goroutine stays blocked in the read.
//     At most one reading goroutine exists at a time, so frames are
//     processed in order.
//   - Writing (ws_writer.go): kick starts a flush goroutine unless one
//     runs; it writes everything pending (replies, pushed deliveries, the
//     held connect's reply) as one frame per round, waits up to
//     wsWriterLinger for more work (so a busy socket keeps one warm writer
//     instead of starting a goroutine per frame), and ends when none came.
//     A fanout may instead be the writer for one round (flushInline).
//     There is never more than one writer, so it owns every data write.
//   - The held /meta/connect waits for its session (waiter.notify and
//     Session.push kick the conn) and for its deadline (a timer kicks it).
//
// terminate ends the socket once, from whichever side fails first.
//
// Framing is the broker's own (package wsframe): frames are read straight
// from the leanConn and written with one syscall each, header and payload
// in one buffer, with no per-connection library state.
type wsConn struct {
	b      *Broker
	lc     *leanConn
	rd     wsframe.Reader // used by the reading goroutine only
	rdl    time.Time      // read deadline set on the socket (reader only)
	info   RequestInfo
	ctx    context.Context // the socket's, for processing; cancelled by terminate
	cancel context.CancelFunc
	flush  atomic.Uint32 // flushRunning, flushAgain
	more   chan struct{} // cap 1: kicked while the writer lingers
	wdl    time.Time     // write deadline set on the socket (writer only)
	rest   []byte        // unsent tail of a frame written inline (writer only)

	dfl *wsframe.Deflate // permessage-deflate negotiated (nil: not); ws_deflate.go

	mu          sync.Mutex
	out         [][]byte // encoded replies waiting for the writer
	outBytes    int
	pong        []byte // payload of the latest unanswered ping (nil: none)
	held        *heldConnect
	deadline    time.Time   // of held
	timer       *time.Timer // kicks at deadline
	session     *Session
	closeCode   wsframe.StatusCode // non-zero: the writer closes with it after flushing
	closeReason string
	goAway      bool   // node shutting down: close after flushing
	pollID      uint64 // parked in the poller under this id
	dead        bool   // terminated
}

const (
	flushRunning = 1 << iota // a flush goroutine exists
	flushAgain               // work arrived while it ran
)

// maxWSPending bounds replies waiting for a slow client, in bytes.
func (b *Broker) maxWSPending() int { return int(b.cfg.MaxRequestBytes) * 4 }

// serveWebSocket upgrades the request and returns: the socket lives on
// without the HTTP handler (whose goroutine, buffers and request state are
// released).
func (b *Broker) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	// Origins were checked by ServeHTTP against AllowedOrigins.
	key, err := wsframe.CheckUpgrade(r)
	if err != nil {
		var he *wsframe.HandshakeError
		errors.As(err, &he)
		w.Header().Set("Sec-WebSocket-Version", "13")
		httpError(w, he.Status, protocol.NewError(protocol.CodeBadRequest, he.Msg))
		return
	}
	h := w.Header()
	h.Set("Upgrade", "websocket")
	h.Set("Connection", "Upgrade")
	h.Set("Sec-WebSocket-Accept", wsframe.AcceptKey(key))
	dfl := b.negotiateDeflate(r, h)
	w.WriteHeader(http.StatusSwitchingProtocols)
	lc, err := hijackLean(w) // flushes the 101 response
	if err != nil {
		b.log.Debug("websocket hijack failed", "err", err)
		return
	}
	conn := &wsConn{
		b:    b,
		lc:   lc,
		info: RequestInfo{Transport: protocol.WebSocket, RemoteAddr: b.clientIP(r), Header: b.keptHeader(r.Header)},
		more: make(chan struct{}, 1),
		dfl:  dfl,
	}
	conn.rd.Init(lc, int(b.cfg.MaxRequestBytes))
	conn.rd.SetDeflate(dfl)
	// The request context ends when the handler returns, and keeping it
	// (even without its cancellation) would keep net/http's per-request
	// contexts: the socket has a context of its own.
	conn.ctx, conn.cancel = context.WithCancel(context.Background())
	b.trackWS(conn)
	go conn.readFrames()
}

// readable is called by the poller when the parked socket has bytes.
func (conn *wsConn) readable() { conn.readFrames() }

// readFrames reads and processes frames until the socket has no more bytes
// buffered, then parks it (or, if it cannot, keeps reading).
func (conn *wsConn) readFrames() {
	defer func() {
		if p := recover(); p != nil {
			conn.b.log.Error("websocket: panic", "panic", p, "stack", string(debug.Stack()))
			conn.terminate()
		}
	}()
	for {
		// The next frame's first byte may take any time (an idle client);
		// the rest of the frame has WebSocketFrameTimeout.
		if !conn.lc.buffered() {
			conn.rdl = time.Time{}
			if !conn.lc.fill(time.Time{}) {
				conn.terminate() // EOF or a socket error
				return
			}
		}
		conn.armRead()
		op, data, err := conn.rd.ReadMessage()
		if err != nil {
			var ce *wsframe.CloseError
			var ne net.Error
			switch {
			case errors.As(err, &ce):
				conn.closeAfterFlush(ce.Code, ce.Reason)
			case errors.As(err, &ne) && ne.Timeout():
				conn.closeAfterFlush(wsframe.StatusPolicyViolation, "frame not received in time")
			default:
				conn.terminate()
			}
			return
		}
		switch op {
		case wsframe.OpPing:
			conn.mu.Lock()
			conn.pong = data // only the latest ping is answered (RFC 6455 5.5.3)
			conn.mu.Unlock()
			conn.kick()
		case wsframe.OpPong:
		case wsframe.OpClose: // echo the code, after what is pending
			conn.closeAfterFlush(wsframe.CloseCode(data), "")
			return
		default:
			if !conn.frame(data) {
				if !conn.closing() {
					conn.terminate()
				} // else the writer flushes, closes with closeCode and terminates
				return
			}
		}
		if conn.lc.buffered() || conn.awaitBytes() {
			continue
		}
		if conn.park() {
			return
		}
	}
}

// wsReaderLinger is how long a reader waits in Go's netpoller for the next
// bytes before it parks the socket; at most maxLingeringReaders do.
const (
	wsReaderLinger      = time.Second
	maxLingeringReaders = 256
)

// awaitBytes keeps the reading goroutine for up to wsReaderLinger, blocked
// in a read (Go's netpoller), for the next bytes of a busy socket: it
// reports whether some arrived. Parking a socket after every frame costs
// an epoll_ctl, a wake-up of the poller and a new goroutine per frame; a
// publisher sending a frame every few milliseconds keeps its reader
// instead. At most maxLingeringReaders wait this way; an idle socket is
// parked after the linger.
func (conn *wsConn) awaitBytes() bool {
	b := conn.b
	if conn.lc.rc == nil { // not parkable: the caller's read blocks anyway
		return false
	}
	if b.lingeringReaders.Add(1) > maxLingeringReaders {
		b.lingeringReaders.Add(-1)
		return false
	}
	defer b.lingeringReaders.Add(-1)
	got := conn.lc.fill(time.Now().Add(wsReaderLinger))
	conn.rdl = time.Time{} // fill moved the deadline: armRead sets it again
	return got
}

// armRead makes sure the socket's read deadline is at least half of
// WebSocketFrameTimeout away (reader only), so that a frame whose bytes
// stop coming ends the socket.
func (conn *wsConn) armRead() {
	d := conn.b.cfg.WebSocketFrameTimeout
	if now := time.Now(); conn.rdl.Sub(now) < d/2 {
		conn.rdl = now.Add(d)
		_ = conn.lc.SetReadDeadline(conn.rdl)
	}
}

// closing reports whether the writer is to close the socket.
func (conn *wsConn) closing() bool {
	conn.mu.Lock()
	defer conn.mu.Unlock()
	return conn.closeCode != 0
}

// closeAfterFlush has the writer send what is pending, then a close frame
// with code and reason, and end the socket. The first code set wins.
func (conn *wsConn) closeAfterFlush(code wsframe.StatusCode, reason string) {
	conn.mu.Lock()
	conn.closeLocked(code, reason)
	conn.mu.Unlock()
	conn.kick()
}

func (conn *wsConn) closeLocked(code wsframe.StatusCode, reason string) {
	if conn.closeCode == 0 {
		conn.closeCode, conn.closeReason = code, reason
	}
}

// park hands the idle socket to the poller; false means the caller must
// keep reading itself.
func (conn *wsConn) park() bool {
	if conn.lc.rc == nil {
		return false
	}
	conn.mu.Lock()
	defer conn.mu.Unlock()
	if conn.dead {
		return false
	}
	id, ok := conn.b.poller.park(conn.lc.rc, conn)
	if ok {
		conn.pollID = id
	}
	return ok
}

// emptyArray answers an empty message array.
var emptyArray = []byte("[]")

// frame processes one incoming frame; false means the socket must end.
func (conn *wsConn) frame(data []byte) bool {
	b, ctx := conn.b, conn.ctx
	msgs, err := protocol.Decode(data, b.cfg.Limits)
	if err != nil {
		var re *protocol.RequestError
		reason := "400::Bad request"
		if errors.As(err, &re) {
			reason = re.Err.String()
		}
		conn.closeAfterFlush(wsframe.StatusInvalidPayload, reason)
		return false
	}
	if len(msgs) == 0 {
		conn.enqueueRaw(emptyArray) // a keep-alive "[]" (sfdx-faye): answered in kind
		return true
	}
	if node := b.route(ctx, msgs, 0); node != "" {
		b.throttle(ctx, conn.forward(ctx, node, data, msgs))
		return true
	}
	req := &request{info: conn.info, msgs: msgs, received: time.Now()}
	res := b.process(ctx, req)
	if !conn.accept(res) {
		return false
	}
	// A flooding client's next frame waits: the socket is not read
	// while its bucket refills.
	b.throttle(ctx, rateRefused(res.replies))
	return true
}

// forward serves a frame for a session owned by another node. A frame that
// holds a /meta/connect is forwarded on its own goroutine (one per held
// connect, not per message) so the socket keeps reading; other frames are
// forwarded inline, which keeps one client's publishes in order. It returns
// the number of publishes the owner refused for their rate (inline frames
// only).
func (conn *wsConn) forward(ctx context.Context, node string, data []byte, msgs []*protocol.Message) int {
	req := &ForwardedRequest{Transport: protocol.WebSocket, Parts: [][]byte{data}, RemoteAddr: conn.info.RemoteAddr}
	do := func() int {
		resp, ok := conn.b.forward(ctx, node, req, msgs)
		if !ok {
			return 0
		}
		if resp.Abort {
			_ = conn.lc.Close() // debug API: lose this reply; the socket dies
			return 0
		}
		conn.enqueueRaw(resp.Body)
		return rateRefusedIn(resp.Body)
	}
	if holdsConnect(msgs) {
		go do()
		return 0
	}
	return do()
}

// enqueueRaw hands an encoded JSON array to the writer.
func (conn *wsConn) enqueueRaw(buf []byte) {
	conn.mu.Lock()
	if conn.outBytes+len(buf) > conn.b.maxWSPending() {
		conn.closeLocked(wsframe.StatusPolicyViolation, "slow consumer")
	} else {
		conn.out = append(conn.out, buf)
		conn.outBytes += len(buf)
	}
	conn.mu.Unlock()
	conn.kick()
}

// accept hands a processed request to the writer.
func (conn *wsConn) accept(res *result) bool {
	defer conn.kick()
	b := conn.b
	var buf []byte
	if len(res.replies) > 0 {
		buf = appendResponse(nil, res.replies, nil, nil)
	}
	conn.mu.Lock()
	defer conn.mu.Unlock()
	if buf != nil {
		if conn.outBytes+len(buf) > b.maxWSPending() {
			conn.closeLocked(wsframe.StatusPolicyViolation, "slow consumer")
			return false
		}
		conn.out = append(conn.out, buf)
		conn.outBytes += len(buf)
	}
	if hc := res.connect; hc != nil {
		if old := conn.held; old != nil {
			// Replaced on this socket: answer it empty now.
			b.finishConnect(old, false)
			rb := appendResponse(nil, nil, nil, old.reply)
			conn.out = append(conn.out, rb)
			conn.outBytes += len(rb)
		}
		if conn.dead {
			b.finishConnect(hc, false) // terminate already released the socket
			return false
		}
		conn.held = hc
		conn.deadline = time.Now().Add(hc.timeout)
		if !hc.immediate {
			detachHeld(hc)
			// Set after the deadline: the timer cannot fire before it.
			if conn.timer == nil {
				conn.timer = time.AfterFunc(hc.timeout, conn.kick)
			} else {
				conn.timer.Reset(hc.timeout)
			}
		}
		hc.s.watchWaiter(hc.w, conn) // before the kick below evaluates it
		if conn.session != hc.s {
			if conn.session != nil {
				conn.session.detachPush(conn)
			}
			conn.session = hc.s
			hc.s.attachPush(conn)
		}
	}
	return true
}

// detachHeld lets a connect that may be held for long keep only its own
// message, not the request buffer it was decoded from.
func detachHeld(hc *heldConnect) {
	hc.m = hc.m.Detached()
	hc.reply.ID = hc.m.ID
}

// terminate ends the socket (once): it leaves the poller, cancels the
// socket's context, ends the held connect without a reply (queued
// messages wait for the next connect), stops pushes and closes.
func (conn *wsConn) terminate() {
	conn.mu.Lock()
	if conn.dead {
		conn.mu.Unlock()
		return
	}
	conn.dead = true
	id := conn.pollID
	conn.pollID = 0
	hc, s := conn.held, conn.session
	conn.held, conn.session = nil, nil
	if conn.timer != nil {
		conn.timer.Stop()
	}
	conn.mu.Unlock()
	signal(conn.more) // a lingering writer ends now
	if id != 0 {
		conn.b.poller.cancel(id)
	}
	conn.cancel()
	if hc != nil {
		conn.b.finishConnect(hc, false)
	}
	if s != nil {
		s.detachPush(conn)
	}
	_ = conn.lc.Close()
	conn.b.untrackWS(conn)
}

func (b *Broker) trackWS(c *wsConn) {
	b.wsMu.Lock()
	b.wsConns[c] = c.terminate
	b.wsMu.Unlock()
}

func (b *Broker) untrackWS(c *wsConn) {
	b.wsMu.Lock()
	delete(b.wsConns, c)
	b.wsMu.Unlock()
}

// keptHeader returns the request header a session (or a websocket) keeps:
// without the fields of the websocket handshake, in a map of its own, as
// the session keeps it (RequestInfo.Header) for as long as it lives, and
// net/http's map is sized for every line of the request.
//
// With Config.KeepHeaders set, only those headers are kept (nil if none
// is present).
func (b *Broker) keptHeader(h http.Header) http.Header {
	if keep := b.cfg.KeepHeaders; keep != nil {
		var out http.Header
		for _, k := range keep {
			if v := h.Values(k); len(v) > 0 {
				if out == nil {
					out = make(http.Header, len(keep))
				}
				out[http.CanonicalHeaderKey(k)] = slices.Clone(v)
			}
		}
		return out
	}
	out := make(http.Header, len(h))
	for k, v := range h {
		switch k {
		case "Connection", "Upgrade", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions":
			continue
		}
		out[k] = slices.Clone(v) // not a window on net/http's shared array
	}
	return out
}

// closeWebSockets waits until every socket is gone (Shutdown answered
// their held connects; each closes after writing that reply) or ctx ends,
// then terminates what is left.
//
// A socket without a held connect has no reply coming: it is told to go
// away (after writing what is pending) at once, so that it does not keep
// the node until ctx ends.
func (b *Broker) closeWebSockets(ctx context.Context) {
	b.wsMu.Lock()
	conns := make([]*wsConn, 0, len(b.wsConns))
	for c := range b.wsConns {
		conns = append(conns, c)
	}
	b.wsMu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		c.goAway = true
		c.mu.Unlock()
		c.kick()
	}
	for {
		b.wsMu.Lock()
		n := len(b.wsConns)
		b.wsMu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			b.wsMu.Lock()
			left := make([]context.CancelFunc, 0, len(b.wsConns))
			for _, terminate := range b.wsConns {
				left = append(left, terminate)
			}
			b.wsMu.Unlock()
			for _, terminate := range left {
				terminate()
			}
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}
