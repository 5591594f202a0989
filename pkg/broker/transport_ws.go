package broker

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// wsWriteTimeout bounds one frame write; a client that cannot take a frame
// in this time is disconnected.
const wsWriteTimeout = 10 * time.Second

// wsConn is one websocket. Its reader (the HTTP handler goroutine) processes
// incoming frames; its single writer goroutine owns every write and batches
// all pending replies and deliveries into one frame.
type wsConn struct {
	b    *Broker
	c    *websocket.Conn
	info RequestInfo
	wake chan struct{} // cap 1: writer has work

	mu        sync.Mutex
	out       [][]byte // encoded replies waiting for the writer
	outBytes  int
	held      *heldConnect
	deadline  time.Time // of held
	session   *Session
	closeWith *websocket.StatusCode // writer closes after flushing
}

// maxWSPending bounds replies waiting for a slow client, in bytes.
func (b *Broker) maxWSPending() int { return int(b.cfg.MaxRequestBytes) * 4 }

func (b *Broker) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	// Origins were checked by ServeHTTP against AllowedOrigins.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		b.log.Debug("websocket accept failed", "err", err)
		return
	}
	c.SetReadLimit(b.cfg.MaxRequestBytes)
	conn := &wsConn{
		b:    b,
		c:    c,
		info: RequestInfo{Transport: protocol.WebSocket, RemoteAddr: b.clientIP(r), Header: r.Header},
		wake: make(chan struct{}, 1),
	}
	// The request context ends when the handler returns; the socket lives
	// on its own context, cancelled when either loop ends.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	b.trackWS(conn, cancel)
	defer b.untrackWS(conn)
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn.writeLoop(ctx)
		cancel()
	}()
	conn.readLoop(ctx)
	cancel()
	<-done
	conn.release()
	_ = c.CloseNow()
}

func (conn *wsConn) readLoop(ctx context.Context) {
	b := conn.b
	for {
		_, data, err := conn.c.Read(ctx)
		if err != nil {
			return
		}
		msgs, err := protocol.Decode(data, b.cfg.Limits)
		if err != nil {
			var re *protocol.RequestError
			reason := "400::Bad request"
			if errors.As(err, &re) {
				reason = re.Err.String()
			}
			_ = conn.c.Close(websocket.StatusInvalidFramePayloadData, reason)
			return
		}
		if node := b.route(ctx, msgs, 0); node != "" {
			b.throttle(ctx, conn.forward(ctx, node, data, msgs))
			continue
		}
		req := &request{info: conn.info, msgs: msgs, received: time.Now()}
		res := b.process(ctx, req)
		if !conn.accept(res) {
			return
		}
		// A flooding client's next frame waits: the socket is not read
		// while its bucket refills.
		b.throttle(ctx, rateRefused(res.replies))
	}
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
	for _, m := range msgs {
		if m.Channel == protocol.ChannelConnect {
			go do()
			return 0
		}
	}
	return do()
}

// enqueueRaw hands an encoded JSON array to the writer.
func (conn *wsConn) enqueueRaw(buf []byte) {
	conn.mu.Lock()
	defer conn.mu.Unlock()
	if conn.outBytes+len(buf) > conn.b.maxWSPending() {
		code := websocket.StatusPolicyViolation
		conn.closeWith = &code
	} else {
		conn.out = append(conn.out, buf)
		conn.outBytes += len(buf)
	}
	signal(conn.wake)
}

// accept hands a processed request to the writer.
func (conn *wsConn) accept(res *result) bool {
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
			signal(conn.wake)
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
		conn.held = hc
		conn.deadline = time.Now().Add(hc.timeout)
		if conn.session != hc.s {
			if conn.session != nil {
				conn.session.detachPush(conn.wake)
			}
			conn.session = hc.s
			hc.s.attachPush(conn.wake)
		}
	}
	signal(conn.wake)
	return true
}

func (conn *wsConn) writeLoop(ctx context.Context) {
	b := conn.b
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var pubs []*engine.Publication
	for {
		conn.mu.Lock()
		hc := conn.held
		deadline := conn.deadline
		conn.mu.Unlock()
		var heldWake, heldDone <-chan struct{}
		if hc != nil {
			heldWake, heldDone = hc.w.wake, hc.w.done
			timer.Reset(max(time.Until(deadline), 0))
		}
		select {
		case <-ctx.Done():
			return
		case <-conn.wake:
		case <-heldWake:
		case <-heldDone:
		case <-timer.C:
		}

		conn.mu.Lock()
		out := conn.out
		conn.out, conn.outBytes = nil, 0
		s := conn.session
		closeWith := conn.closeWith
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
			}
		}
		conn.mu.Unlock()

		pubs = pubs[:0]
		if s != nil {
			pubs = s.takePushed(pubs)
			b.observeDelivered(pubs)
		}
		var connectReply *protocol.Reply
		shutdown := false
		if complete != nil {
			cp, drop := b.finishConnect(complete, true)
			if drop {
				return // debug API: lose this reply; the socket is closed
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
			wctx, cancel := context.WithTimeout(ctx, wsWriteTimeout)
			err := conn.c.Write(wctx, websocket.MessageText, frame)
			cancel()
			clear(pubs)
			if err != nil {
				return
			}
		}
		if closeWith != nil {
			_ = conn.c.Close(*closeWith, "slow consumer")
			return
		}
		if shutdown {
			_ = conn.c.Close(websocket.StatusGoingAway, "node shutting down")
			return
		}
	}
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

// release ends the socket's hold on its session: the held connect ends
// without a reply (queued messages wait for the next connect) and pushes
// stop.
func (conn *wsConn) release() {
	conn.mu.Lock()
	hc, s := conn.held, conn.session
	conn.held, conn.session = nil, nil
	conn.mu.Unlock()
	if hc != nil {
		conn.b.finishConnect(hc, false)
	}
	if s != nil {
		s.detachPush(conn.wake)
	}
}

func (b *Broker) trackWS(c *wsConn, cancel context.CancelFunc) {
	b.wsMu.Lock()
	b.wsConns[c] = cancel
	b.wsMu.Unlock()
}

func (b *Broker) untrackWS(c *wsConn) {
	b.wsMu.Lock()
	delete(b.wsConns, c)
	b.wsMu.Unlock()
}

// closeWebSockets cancels every socket (after Shutdown answered their held
// connects) and waits until they are gone or ctx ends.
func (b *Broker) closeWebSockets(ctx context.Context) {
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
			for _, cancel := range b.wsConns {
				cancel()
			}
			b.wsMu.Unlock()
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}
