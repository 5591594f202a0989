package broker

import (
	"context"
	"errors"
	"net/http"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
	"github.com/bayeux-cluster/bayeux/pkg/broker/wsframe"
)

// wsWriteTimeout bounds one frame write; a client that cannot take a frame
// in this time is disconnected.
const wsWriteTimeout = 10 * time.Second

// wsConn is one websocket. It has no goroutine of its own while idle:
//
//   - Reading: a goroutine reads and processes frames while bytes arrive,
//     then parks the socket in the shared readPoller and ends; the poller
//     starts a new one when the socket turns readable. Where parking is not
//     possible (TLS, no epoll) the goroutine stays blocked in the read.
//     At most one reading goroutine exists at a time, so frames are
//     processed in order.
//   - Writing: kick starts a flush goroutine unless one runs; it writes
//     everything pending (replies, pushed deliveries, the held connect's
//     reply) as one frame per round, waits up to wsWriterLinger for more
//     work (so a busy socket keeps one warm writer instead of starting a
//     goroutine per frame), and ends when none came. There is never more
//     than one, so it owns every data write.
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
	info   RequestInfo
	ctx    context.Context // the socket's, for processing; cancelled by terminate
	cancel context.CancelFunc
	flush  atomic.Uint32 // flushRunning, flushAgain
	more   chan struct{} // cap 1: kicked while the writer lingers
	wdl    time.Time     // write deadline set on the socket (writer only)
	rest   []byte        // unsent tail of a frame written inline (writer only)

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

// wsWriterLinger is how long an idle writer waits for more work before
// it ends: long enough to span the gaps between frames of a busy socket
// (starting a writer, and growing its stack, per frame costs about 15% of
// the CPU of a fan-out). At most maxLingeringWriters linger at once, so
// that a burst of sessions (say, 10,000 connecting) does not keep a
// writer, and its stack, per socket: that memory would go back to the
// heap, but not soon to the OS.
const (
	wsWriterLinger      = time.Second
	maxLingeringWriters = 256
	wsReaderLinger      = time.Second
	maxLingeringReaders = 256
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
	}
	conn.rd.Init(lc, int(b.cfg.MaxRequestBytes))
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
		op, data, err := conn.rd.ReadMessage()
		if err != nil {
			var ce *wsframe.CloseError
			if errors.As(err, &ce) {
				conn.closeAfterFlush(ce.Code, ce.Reason)
			} else {
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
	return conn.lc.fill(time.Now().Add(wsReaderLinger))
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
	id, ok := poller.park(conn.lc.rc, conn)
	if ok {
		conn.pollID = id
	}
	return ok
}

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

// kick makes sure a flush goroutine will look at the pending work. It
// never blocks and takes no lock (sessions call it with their lock held).
func (conn *wsConn) kick() {
	for {
		st := conn.flush.Load()
		if st&flushRunning == 0 {
			if conn.flush.CompareAndSwap(st, flushRunning) {
				go conn.flushLoop()
				return
			}
			continue
		}
		if st&flushAgain != 0 || conn.flush.CompareAndSwap(st, st|flushAgain) {
			signal(conn.more) // wakes a lingering writer
			return
		}
	}
}

// flushInline is kick for a fanout (see kickBatch): with no writer
// running, the caller's goroutine becomes the writer for one round and
// writes what is pending with one non-blocking write, instead of starting
// a goroutine to do it. Whatever would block is left to a writer
// goroutine (flushOnce's inline mode). Call it with no lock held.
func (conn *wsConn) flushInline() {
	if conn.lc.rc == nil || !conn.flush.CompareAndSwap(0, flushRunning) {
		conn.kick() // a writer runs (it is told there is more), or TLS
		return
	}
	var arr [8]*engine.Publication
	_, ok, handoff := conn.flushOnce(arr[:0], true)
	switch {
	case !ok:
		conn.terminate() // flushRunning stays set: no writer starts again
	case handoff || !conn.flush.CompareAndSwap(flushRunning, 0):
		go conn.flushLoop() // more to do, or kicked meanwhile
	}
}

// flushLoop writes until nothing is pending, then ends (a later kick
// starts another). On a write failure or a close it terminates the socket
// and leaves flushRunning set, so no writer starts again.
func (conn *wsConn) flushLoop() {
	var pubs []*engine.Publication
	var linger *time.Timer
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	for {
		conn.flush.Store(flushRunning) // work kicked before this is seen below
		var ok bool
		if pubs, ok, _ = conn.flushOnce(pubs[:0], false); !ok {
			conn.terminate()
			return
		}
		if conn.flush.Load() != flushRunning {
			continue // kicked meanwhile
		}
		// Linger: a kick (or terminate) signals more. A token left from a
		// kick seen during the flush costs one empty round.
		if conn.b.lingering.Add(1) > maxLingeringWriters {
			conn.b.lingering.Add(-1)
			if conn.flush.CompareAndSwap(flushRunning, 0) {
				return
			}
			continue
		}
		if linger == nil {
			linger = time.NewTimer(wsWriterLinger)
		} else {
			linger.Reset(wsWriterLinger)
		}
		select {
		case <-conn.more:
			conn.b.lingering.Add(-1)
			continue
		case <-linger.C:
		}
		conn.b.lingering.Add(-1)
		if conn.flush.CompareAndSwap(flushRunning, 0) {
			return
		}
	}
}

// flushOnce writes what is pending as one frame and completes the held
// connect if it is due. It reports false when the socket must end.
//
// inline is flushInline's mode: nothing blocks. Work that might (a close,
// a pong, a held connect to complete, which may run extensions and save
// session state) is left untouched and handoff is reported, as it is when
// the frame could not be written whole (its tail is in conn.rest): the
// caller then starts the writer goroutine.
func (conn *wsConn) flushOnce(pubs []*engine.Publication, inline bool) (_ []*engine.Publication, ok, handoff bool) {
	b := conn.b
	if rest := conn.rest; rest != nil {
		conn.rest = nil
		if err := conn.writeFrame(rest); err != nil {
			return pubs, false, false
		}
	}
	conn.mu.Lock()
	if conn.dead {
		conn.mu.Unlock()
		return pubs, false, false
	}
	due := conn.heldDueLocked()
	if inline && (due || conn.closeCode != 0 || conn.goAway || conn.pong != nil) {
		conn.mu.Unlock()
		return pubs, true, true
	}
	out := conn.out
	conn.out, conn.outBytes = nil, 0
	pong := conn.pong
	conn.pong = nil
	s := conn.session
	closeCode, closeReason := conn.closeCode, conn.closeReason
	goAway := conn.goAway && conn.held == nil
	var complete *heldConnect
	if due {
		complete = conn.held
		conn.held = nil
		if conn.timer != nil {
			conn.timer.Stop()
		}
	}
	conn.mu.Unlock()

	if s != nil {
		pubs = s.takePushed(pubs)
		b.observeDelivered(pubs)
	}
	var connectReply *protocol.Reply
	shutdown := false
	if complete != nil {
		cp, drop := b.finishConnect(complete, true)
		if drop {
			return pubs, false, false // debug API: lose this reply; the socket is closed
		}
		pubs = append(pubs, cp...)
		connectReply = complete.reply
		shutdown = complete.w.reason == endShutdown || b.shuttingDown.Load()
	}
	if pong != nil {
		if err := conn.writeFrame(wsframe.AppendFrame(nil, wsframe.OpPong, pong)); err != nil {
			return pubs, false, false
		}
	}
	if len(out) > 0 || len(pubs) > 0 || connectReply != nil {
		var buf []byte
		if len(out) == 0 { // the common case: built in place after the header
			buf = appendResponse(wsframe.ReserveHeader(make([]byte, 0, 256)), nil, pubs, connectReply)
		} else {
			var last []byte
			if len(pubs) > 0 || connectReply != nil {
				last = appendResponse(nil, nil, pubs, connectReply)
			}
			buf = mergeArrays(out, last)
		}
		f := wsframe.Frame(buf, wsframe.OpText)
		var err error
		if inline {
			conn.rest, err = conn.writeNow(f)
			handoff = len(conn.rest) > 0
		} else {
			err = conn.writeFrame(f)
		}
		clear(pubs)
		if err != nil {
			return pubs, false, false
		}
	}
	if closeCode != 0 {
		conn.closeFromWriter(closeCode, closeReason)
		return pubs, false, false
	}
	if shutdown || goAway {
		conn.closeFromWriter(wsframe.StatusGoingAway, "node shutting down")
		return pubs, false, false
	}
	return pubs, true, handoff
}

// heldDueLocked reports whether the held connect is to be answered now:
// it replies at once, its wait ended (woken, replaced, closed), its
// deadline passed, or (ack sessions, which get no pushes) messages wait.
func (conn *wsConn) heldDueLocked() bool {
	hc := conn.held
	if hc == nil {
		return false
	}
	select {
	case <-hc.w.done:
		return true
	default:
	}
	return hc.immediate || !time.Now().Before(conn.deadline) || (hc.s.AckEnabled() && hc.s.hasDeliveries())
}

// mergeArrays joins JSON arrays ("[a,b]", "[c]") into one array, after
// wsframe.MaxHeaderLen reserved bytes.
func mergeArrays(parts [][]byte, last []byte) []byte {
	n := wsframe.MaxHeaderLen + 2 + len(last)
	for _, p := range parts {
		n += len(p)
	}
	dst := wsframe.ReserveHeader(make([]byte, 0, n))
	dst = append(dst, '[')
	first := true
	add := func(p []byte) {
		if len(p) <= 2 {
			return
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, p[1:len(p)-1]...)
	}
	for _, p := range parts {
		add(p)
	}
	add(last)
	return append(dst, ']')
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
		poller.cancel(id)
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

// closeFromWriter ends the socket from the writer goroutine, which owns
// every write: a close frame (reason cut to 123 bytes; none for
// StatusNoStatus), then the connection is dropped without waiting for the
// peer's close frame.
func (conn *wsConn) closeFromWriter(code wsframe.StatusCode, reason string) {
	var f []byte
	if code == wsframe.StatusNoStatus {
		f = wsframe.AppendFrame(nil, wsframe.OpClose, nil)
	} else {
		f = wsframe.CloseFrame(code, reason)
	}
	_ = conn.lc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = conn.lc.Write(f)
	_ = conn.lc.Close()
}

// writeNow writes f with one non-blocking write and returns what the
// socket did not take (nil: all of it). It never waits: a full socket
// buffer leaves the tail to the writer goroutine. The caller must be the
// writer (own flushRunning).
func (conn *wsConn) writeNow(f []byte) ([]byte, error) {
	n, err := writeNonBlocking(conn.lc.rc, f)
	switch {
	case err != nil:
		return nil, err
	case n == len(f):
		return nil, nil
	}
	return f[n:], nil
}

// writeFrame writes one frame with one write, within wsWriteTimeout: the
// socket's write deadline is moved forward only when less than half of
// that is left, so that a busy socket does not reset a timer per frame.
// A write is thus bounded by between half and all of wsWriteTimeout.
func (conn *wsConn) writeFrame(f []byte) error {
	if now := time.Now(); conn.wdl.Sub(now) < wsWriteTimeout/2 {
		conn.wdl = now.Add(wsWriteTimeout)
		if err := conn.lc.SetWriteDeadline(conn.wdl); err != nil {
			return err
		}
	}
	_, err := conn.lc.Write(f)
	return err
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
