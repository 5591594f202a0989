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

	"github.com/bayeux-cluster/bayeux/pkg/broker/internal/netpoll"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
	"github.com/bayeux-cluster/bayeux/pkg/broker/wsframe"
)

// wsWriteTimeout bounds one frame write; a client that cannot take a frame
// in this time is disconnected.
const wsWriteTimeout = 10 * time.Second

// wsConn is one websocket. It has no goroutine of its own while idle:
//
//   - Reading: a goroutine reads and processes frames while bytes arrive,
//     then parks the socket in the broker's netpoll.Poller and ends; the poller
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
// from the netpoll.Conn and written with one syscall each, header and payload
// in one buffer, with no per-connection library state.
type wsConn struct {
	b      *Broker
	lc     *netpoll.Conn
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

	move moveGate // paces moving a session owned elsewhere here (adopt_handover.go)

	// waiting are processed frames whose publishes are in flight, their
	// replies due in this order (reader only; see settle).
	waiting []*result

	mu          sync.Mutex
	out         [][]byte // encoded replies waiting for the writer
	outBytes    int
	pong        []byte       // payload of the latest unanswered ping (nil: none)
	held        *heldConnect // held by this socket (it is the connectHolder)
	session     *Session
	closeCode   wsframe.StatusCode // non-zero: the writer closes with it after flushing
	closeReason string
	goAway      bool   // node shutting down: close after flushing
	goingAway   bool   // the writer is closing for goAway: no frame is processed any more
	busy        bool   // the reader is processing frames or has publishes in flight (see enter)
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
	key, he := wsframe.CheckUpgrade(r)
	if he != nil {
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
	lc, err := netpoll.Hijack(w) // flushes the 101 response
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
	b.conns.trackWS(conn, true)
	go conn.readFrames()
}

// Readable (netpoll.Readable) is called by the poller when the parked
// socket has bytes.
func (conn *wsConn) Readable() { conn.readFrames() }

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
		if !conn.lc.Buffered() {
			conn.rdl = time.Time{}
			if !conn.lc.Fill(time.Time{}) {
				conn.terminate() // EOF or a socket error
				return
			}
		}
		conn.armRead()
		op, data, err := conn.rd.ReadMessage()
		if err != nil {
			conn.settle() // the replies of earlier frames go before the close
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
			conn.settle()
			conn.closeAfterFlush(wsframe.CloseCode(data), "")
			return
		default:
			if !conn.enter() {
				return // the writer is closing the socket (drain) and terminates it
			}
			ok := conn.frame(data)
			if ok && (!conn.lc.Buffered() || len(conn.waiting) >= wsPublishWindow) {
				ok = conn.settle()
			}
			if !ok {
				conn.settle()
				conn.leave()
				if !conn.closing() {
					conn.terminate()
				} // else the writer flushes, closes with closeCode and terminates
				return
			}
			if len(conn.waiting) == 0 {
				conn.leave()
			}
		}
		if conn.lc.Buffered() || conn.awaitBytes() {
			continue
		}
		if conn.park() {
			return
		}
	}
}

// enter marks the reader busy with a frame, so that a drain's go-away
// close waits until the frame's replies (and its publishes in flight) are
// handed to the writer: a publish the node took in is answered, never cut
// off by the close. False: the writer already decided to close; the frame
// is not processed (its client sees the close without a reply and may
// send it again elsewhere).
func (conn *wsConn) enter() bool {
	conn.mu.Lock()
	defer conn.mu.Unlock()
	if conn.goingAway || conn.dead {
		return false
	}
	conn.busy = true
	return true
}

// leave ends what enter began; a go-away that waited for it is resumed.
func (conn *wsConn) leave() {
	conn.mu.Lock()
	conn.busy = false
	goAway := conn.goAway
	conn.mu.Unlock()
	if goAway {
		conn.kick()
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
	if conn.lc.RawConn() == nil { // not parkable: the caller's read blocks anyway
		return false
	}
	if b.lingeringReaders.Add(1) > maxLingeringReaders {
		b.lingeringReaders.Add(-1)
		return false
	}
	defer b.lingeringReaders.Add(-1)
	got := conn.lc.Fill(time.Now().Add(wsReaderLinger))
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
	if conn.lc.RawConn() == nil {
		return false
	}
	conn.mu.Lock()
	defer conn.mu.Unlock()
	if conn.dead {
		return false
	}
	id, ok := conn.b.poller.Park(conn.lc.RawConn(), conn)
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
		conn.settle() // the replies of earlier frames go before the close
		var re *protocol.RequestError
		reason := "400::Bad request"
		if errors.As(err, &re) {
			reason = re.Err.String()
		}
		conn.closeAfterFlush(wsframe.StatusInvalidPayload, reason)
		return false
	}
	publishes := onlyPublishes(msgs)
	if !publishes && !conn.settle() { // earlier publishes are acknowledged first
		return false
	}
	if len(msgs) == 0 {
		conn.enqueueRaw(emptyArray) // a keep-alive "[]" (sfdx-faye): answered in kind
		return true
	}
	out := b.serve(ctx, &inbound{info: conn.info, msgs: msgs, parts: [][]byte{data}, async: conn.forwarded, keepPending: publishes, mover: &conn.move})
	switch {
	case out.res == nil:
		if !conn.settle() {
			return false
		}
		conn.forwarded(out)
	case len(out.res.pending) > 0 || len(conn.waiting) > 0:
		conn.waiting = append(conn.waiting, out.res)
	case !conn.accept(out.res):
		return false
	}
	if out.refused > 0 {
		// A flooding client's next frame waits: the socket is not read
		// while its bucket refills.
		ok := conn.settle()
		b.throttle(ctx, out.refused)
		return ok
	}
	return true
}

// wsPublishWindow bounds the frames whose publishes a websocket keeps in
// flight together before it waits for their acknowledgements.
const wsPublishWindow = 64

// onlyPublishes reports whether every message of a frame is a publish to
// a broadcast channel: such a frame may be processed while the publishes
// of earlier frames are in flight.
func onlyPublishes(msgs []*protocol.Message) bool {
	for _, m := range msgs {
		if protocol.IsMeta(m.Channel) || protocol.IsService(m.Channel) {
			return false
		}
	}
	return len(msgs) > 0
}

// settle waits for the publishes of the waiting frames, in order, and
// hands their replies to the writer; false means the socket must end.
func (conn *wsConn) settle() bool {
	ok := true
	for i, res := range conn.waiting {
		conn.b.settle(conn.ctx, res)
		if ok && !conn.accept(res) {
			ok = false
		}
		conn.waiting[i] = nil
	}
	conn.waiting = conn.waiting[:0]
	return ok
}

// forwarded writes the owner's response to a frame forwarded to the
// session's owner (Broker.serve forwards a frame holding a /meta/connect
// on a goroutine of its own, so that the socket keeps reading; other
// frames inline, which keeps one client's publishes in order).
func (conn *wsConn) forwarded(out outcome) {
	switch {
	case out.lost:
		conn.closeAfterFlush(wsframe.StatusTryAgainLater, "session owner's reply lost")
	case !out.gone && out.body != nil:
		conn.enqueueRaw(out.body)
	}
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
	var buf, rb []byte
	if len(res.replies) > 0 {
		buf = appendResponse(nil, res.replies, nil, nil)
	}
	hc := res.connect
	if hc != nil {
		// A connect held by this socket is replaced: it is answered empty
		// now, outside conn.mu (answering runs extensions).
		conn.mu.Lock()
		old := conn.held
		conn.held = nil
		conn.mu.Unlock()
		if old != nil {
			old.answer(false)
			rb = appendResponse(nil, nil, nil, old.reply)
		}
	}
	conn.mu.Lock()
	ok := !conn.dead
	if buf != nil {
		if conn.outBytes+len(buf) > b.maxWSPending() {
			conn.closeLocked(wsframe.StatusPolicyViolation, "slow consumer")
			ok = false
		} else {
			conn.out = append(conn.out, buf)
			conn.outBytes += len(buf)
		}
	}
	if rb != nil {
		conn.out = append(conn.out, rb)
		conn.outBytes += len(rb)
	}
	if hc == nil {
		conn.mu.Unlock()
		return ok
	}
	if !ok { // the socket is closing or gone: nobody will answer it
		conn.mu.Unlock()
		hc.cancel()
		return false
	}
	conn.held = hc
	if !hc.immediate {
		hc.detach()
	}
	hc.pushed = true // this socket pushes deliveries: they do not end the connect
	hc.hold(conn)    // before the kick below evaluates it
	if conn.session != hc.s {
		if conn.session != nil {
			conn.session.detachPush(conn)
		}
		conn.session = hc.s
		hc.s.attachPush(conn)
	}
	conn.mu.Unlock()
	return true
}

// schedule (connectHolder): the held connect may be due; the writer looks.
func (conn *wsConn) schedule() { conn.kick() }

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
	conn.mu.Unlock()
	signal(conn.more) // a lingering writer ends now
	if id != 0 {
		conn.b.poller.Cancel(id)
	}
	conn.cancel()
	if hc != nil {
		hc.cancel()
	}
	if s != nil {
		s.detachPush(conn)
	}
	_ = conn.lc.Close()
	conn.b.conns.trackWS(conn, false)
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
	for _, c := range b.conns.webSockets() {
		c.mu.Lock()
		c.goAway = true
		c.mu.Unlock()
		c.kick()
	}
	for b.conns.webSocketCount() > 0 {
		select {
		case <-ctx.Done():
			for _, c := range b.conns.webSockets() {
				c.terminate()
			}
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}
