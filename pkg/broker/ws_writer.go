package broker

import (
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/internal/netpoll"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
	"github.com/bayeux-cluster/bayeux/pkg/broker/wsframe"
)

// The write side of a websocket (see wsConn): at most one writer at a
// time owns the socket's writes (flushRunning); a kick starts a writer
// goroutine, a fanout may be the writer itself for one round
// (flushInline), and a busy socket's writer lingers for more work.

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
	if conn.lc.RawConn() == nil || !conn.flush.CompareAndSwap(0, flushRunning) {
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
	due := conn.held != nil && conn.held.due()
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
	goAway := conn.goAway && conn.held == nil && !conn.busy
	if goAway {
		conn.goingAway = true // the reader processes no frame after this
	}
	var complete *heldConnect
	if due {
		complete = conn.held
		conn.held = nil
	}
	conn.mu.Unlock()

	if s != nil && !b.fenced() {
		pubs = s.takePushed(pubs)
		b.observeDelivered(pubs)
	}
	var connectReply *protocol.Reply
	shutdown := false
	if complete != nil {
		cp, drop := complete.answer(true)
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
		f := conn.frameText(buf, out, pubs)
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
		if !goAway && !conn.goingAwayNow() {
			// A held connect answered for the shutdown, while the reader
			// is busy or replies wait: closed once they are written (the
			// drain's goAway, or their kick, runs the writer again).
			return pubs, true, handoff
		}
		conn.closeFromWriter(wsframe.StatusGoingAway, "node shutting down")
		return pubs, false, false
	}
	return pubs, true, handoff
}

// goingAwayNow decides the shutdown close (goingAway: no frame is
// processed after it) unless the reader is busy or a reply or pong waits
// to be written.
func (conn *wsConn) goingAwayNow() bool {
	conn.mu.Lock()
	defer conn.mu.Unlock()
	if conn.busy || len(conn.out) > 0 || conn.pong != nil {
		return false
	}
	conn.goingAway = true
	return true
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
	n, err := netpoll.WriteNonBlocking(conn.lc.RawConn(), f)
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
