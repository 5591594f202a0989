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

	"github.com/coder/websocket"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
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
type wsConn struct {
	b      *Broker
	c      *websocket.Conn
	lc     *leanConn // nil if the connection could not be wrapped
	info   RequestInfo
	ctx    context.Context // the socket's, for processing; cancelled by terminate
	cancel context.CancelFunc
	// io is the context of the library's reads and writes. It is never
	// cancelled (terminate closes the socket instead; writes are bounded
	// by a write deadline): with a cancellable one the library registers
	// an AfterFunc per read and keeps the last write's context.
	io    context.Context
	flush atomic.Uint32 // flushRunning, flushAgain
	more  chan struct{} // cap 1: kicked while the writer lingers

	mu        sync.Mutex
	out       [][]byte // encoded replies waiting for the writer
	outBytes  int
	held      *heldConnect
	deadline  time.Time   // of held
	timer     *time.Timer // kicks at deadline
	session   *Session
	closeWith *websocket.StatusCode // writer closes after flushing
	goAway    bool                  // node shutting down: close after flushing
	pollID    uint64                // parked in the poller under this id
	dead      bool                  // terminated
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
)

// maxWSPending bounds replies waiting for a slow client, in bytes.
func (b *Broker) maxWSPending() int { return int(b.cfg.MaxRequestBytes) * 4 }

// serveWebSocket upgrades the request and returns: the socket lives on
// without the HTTP handler (whose goroutine, buffers and request state are
// released).
func (b *Broker) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	// Origins were checked by ServeHTTP against AllowedOrigins.
	hj := &leanHijacker{ResponseWriter: w}
	c, err := websocket.Accept(hj, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		b.log.Debug("websocket accept failed", "err", err)
		return
	}
	c.SetReadLimit(b.cfg.MaxRequestBytes)
	conn := &wsConn{
		b:    b,
		c:    c,
		lc:   hj.conn,
		info: RequestInfo{Transport: protocol.WebSocket, RemoteAddr: b.clientIP(r), Header: b.keptHeader(r.Header)},
		more: make(chan struct{}, 1),
	}
	// The request context ends when the handler returns, and keeping it
	// (even without its cancellation) would keep net/http's per-request
	// contexts: the socket has contexts of its own.
	conn.io = context.Background()
	conn.ctx, conn.cancel = context.WithCancel(conn.io)
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
		_, data, err := conn.c.Read(conn.io)
		if err != nil {
			conn.terminate()
			return
		}
		if !conn.frame(data) {
			if !conn.closing() {
				conn.terminate()
			} // else the writer flushes, closes with closeWith and terminates
			return
		}
		if conn.lc != nil && conn.lc.buffered() {
			continue
		}
		if conn.park() {
			return
		}
	}
}

// closing reports whether the writer is to close the socket (slow consumer).
func (conn *wsConn) closing() bool {
	conn.mu.Lock()
	defer conn.mu.Unlock()
	return conn.closeWith != nil
}

// park hands the idle socket to the poller; false means the caller must
// keep reading itself.
func (conn *wsConn) park() bool {
	if conn.lc == nil || conn.lc.rc == nil {
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
		_ = conn.c.Close(websocket.StatusInvalidFramePayloadData, reason)
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
			_ = conn.c.CloseNow() // debug API: lose this reply; the socket dies
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
		code := websocket.StatusPolicyViolation
		conn.closeWith = &code
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
			code := websocket.StatusPolicyViolation
			conn.closeWith = &code
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
		if pubs, ok = conn.flushOnce(pubs[:0]); !ok {
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
func (conn *wsConn) flushOnce(pubs []*engine.Publication) ([]*engine.Publication, bool) {
	b := conn.b
	conn.mu.Lock()
	if conn.dead {
		conn.mu.Unlock()
		return pubs, false
	}
	out := conn.out
	conn.out, conn.outBytes = nil, 0
	s := conn.session
	closeWith := conn.closeWith
	goAway := conn.goAway && conn.held == nil
	var complete *heldConnect
	if hc := conn.held; hc != nil {
		ended := false
		select {
		case <-hc.w.done:
			ended = true
		default:
		}
		if hc.immediate || ended || !time.Now().Before(conn.deadline) || (hc.s.AckEnabled() && hc.s.hasDeliveries()) {
			complete = hc
			conn.held = nil
			if conn.timer != nil {
				conn.timer.Stop()
			}
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
			return pubs, false // debug API: lose this reply; the socket is closed
		}
		pubs = append(pubs, cp...)
		connectReply = complete.reply
		shutdown = complete.w.reason == endShutdown || b.shuttingDown.Load()
	}
	if len(out) > 0 || len(pubs) > 0 || connectReply != nil {
		frame := make([]byte, 0, 256)
		if len(pubs) > 0 || connectReply != nil {
			frame = appendResponse(frame, nil, pubs, connectReply)
		}
		frame = mergeArrays(out, frame)
		err := conn.write(frame)
		clear(pubs)
		if err != nil {
			return pubs, false
		}
	}
	if closeWith != nil {
		conn.closeFromWriter(*closeWith, "slow consumer")
		return pubs, false
	}
	if shutdown || goAway {
		conn.closeFromWriter(websocket.StatusGoingAway, "node shutting down")
		return pubs, false
	}
	return pubs, true
}

// mergeArrays joins JSON arrays ("[a,b]", "[c]") into one array.
func mergeArrays(parts [][]byte, last []byte) []byte {
	if len(parts) == 0 {
		return last
	}
	n := len(last)
	for _, p := range parts {
		n += len(p)
	}
	dst := make([]byte, 0, n)
	dst = append(dst, '[')
	add := func(p []byte) {
		if len(p) <= 2 {
			return
		}
		if len(dst) > 1 {
			dst = append(dst, ',')
		}
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
	_ = conn.c.CloseNow()
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

// write writes one text frame within wsWriteTimeout (a write deadline on
// the socket, so that no context is allocated or retained per write).
// closeFromWriter ends the socket from the writer goroutine with a close
// frame (reason at most 123 bytes). The library's Close would then wait
// for the peer's close frame, reading the socket while the reader
// goroutine may look at the read buffers (leanConn.buffered): instead the
// writer, which owns every write, sends the close frame itself and drops
// the connection.
func (conn *wsConn) closeFromWriter(code websocket.StatusCode, reason string) {
	if conn.lc == nil {
		_ = conn.c.Close(code, reason)
		return
	}
	f := make([]byte, 0, 4+len(reason))
	f = append(f, 0x88, byte(2+len(reason)), byte(code>>8), byte(code))
	f = append(f, reason...)
	_ = conn.lc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = conn.lc.Conn.Write(f)
	_ = conn.c.CloseNow()
}

func (conn *wsConn) write(frame []byte) error {
	if conn.lc == nil {
		ctx, cancel := context.WithTimeout(conn.ctx, wsWriteTimeout)
		defer cancel()
		return conn.c.Write(ctx, websocket.MessageText, frame)
	}
	if err := conn.lc.SetWriteDeadline(time.Now().Add(wsWriteTimeout)); err != nil {
		return err
	}
	err := conn.c.Write(conn.io, websocket.MessageText, frame)
	_ = conn.lc.SetWriteDeadline(time.Time{})
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
