package broker

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/http"
	"sync"
	"syscall"
)

// Memory of a long-lived connection (a websocket, a parked long-poll)
// matters more than its speed: net/http keeps a 4 KB bufio.Reader and a
// 4 KB bufio.Writer per connection and hands both over on Hijack. A
// leanConn replaces them: reads borrow a pooled buffer only while bytes
// are waiting, and the websocket library gets minimal (16-byte) bufio
// buffers on top of it.

const leanReadBuf = 4 << 10

var leanBufPool = sync.Pool{New: func() any { b := make([]byte, leanReadBuf); return &b }}

// leanConn wraps a hijacked connection. Reads are served from pre (bytes
// net/http had buffered), then from a pooled buffer filled by one read of
// the socket and returned to the pool as soon as it is drained. Writes of
// websocket frames are coalesced (see frameWriter).
//
// Concurrency: the read side (Read, buffered) is used by one reader at a
// time and the write side (Write) by one writer at a time (the websocket
// library serializes both); the two sides share nothing.
type leanConn struct {
	net.Conn
	pre  []byte
	buf  *[]byte // pooled, holding buf[off:end] unread; nil when drained
	off  int
	end  int
	fw   frameWriter
	rc   syscall.RawConn // nil: not parkable (TLS, or not a socket)
	ws   bool            // coalesce websocket frames on write
	brSm *bufio.Reader   // the 16-byte reader handed out by Hijack
}

func newLeanConn(c net.Conn, pre []byte) *leanConn {
	lc := &leanConn{Conn: c, pre: pre}
	lc.fw.c = c
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			lc.rc = rc
		}
	}
	return lc
}

func (lc *leanConn) Read(p []byte) (int, error) {
	if len(lc.pre) > 0 {
		n := copy(p, lc.pre)
		lc.pre = lc.pre[n:]
		if len(lc.pre) == 0 {
			lc.pre = nil
		}
		return n, nil
	}
	if lc.buf == nil {
		if len(p) >= leanReadBuf {
			return lc.Conn.Read(p)
		}
		b := leanBufPool.Get().(*[]byte)
		n, err := lc.Conn.Read(*b)
		if n <= 0 {
			leanBufPool.Put(b)
			return 0, err
		}
		lc.buf, lc.off, lc.end = b, 0, n
	}
	n := copy(p, (*lc.buf)[lc.off:lc.end])
	lc.off += n
	if lc.off == lc.end {
		leanBufPool.Put(lc.buf)
		lc.buf = nil
	}
	return n, nil
}

// buffered reports whether bytes were read from the socket and not yet
// consumed (here or in the small bufio.Reader on top). Call it only from
// the reader, between reads.
func (lc *leanConn) buffered() bool {
	return len(lc.pre) > 0 || lc.buf != nil || (lc.brSm != nil && lc.brSm.Buffered() > 0)
}

func (lc *leanConn) Write(p []byte) (int, error) {
	if lc.ws {
		return lc.fw.Write(p)
	}
	return lc.Conn.Write(p)
}

// frameWriter sits under a 16-byte bufio.Writer that the websocket library
// writes whole frames through (header, payload, Flush). That buffer
// flushes a frame longer than 16 bytes in two writes: its first 16 bytes,
// then the rest. frameWriter keeps such a partial frame start (at most 16
// bytes, known from the frame header) and sends it with the rest in one
// writev, so a frame still costs one syscall. Anything it does not
// recognise (a partial header, more than one frame in a write) switches it
// to plain pass-through for good.
type frameWriter struct {
	c       net.Conn
	rem     int64 // bytes of the current frame still to come
	stash   [16]byte
	nstash  int
	through bool
}

func (w *frameWriter) Write(p []byte) (int, error) {
	if w.through {
		return w.c.Write(p)
	}
	if w.rem > 0 {
		w.rem -= int64(len(p))
		if w.rem < 0 {
			w.through = true
		}
		if w.nstash == 0 {
			return w.c.Write(p)
		}
		head := w.nstash
		w.nstash = 0
		if head+len(p) > leanReadBuf {
			bufs := net.Buffers{w.stash[:head], p} // WriteTo consumes bufs
			n, err := bufs.WriteTo(w.c)
			return max(0, int(n)-head), err
		}
		// A small frame: one copy rather than writev, whose iovec array
		// the runtime would keep per socket.
		b := leanBufPool.Get().(*[]byte)
		buf := append(append((*b)[:0], w.stash[:head]...), p...)
		n, err := w.c.Write(buf)
		leanBufPool.Put(b)
		return max(0, n-head), err
	}
	total, ok := frameLength(p)
	switch {
	case !ok || total < int64(len(p)):
		w.through = true
		return w.c.Write(p)
	case total == int64(len(p)):
		return w.c.Write(p)
	case len(p) <= len(w.stash):
		w.nstash = copy(w.stash[:], p)
		w.rem = total - int64(len(p))
		return len(p), nil
	default:
		w.rem = total - int64(len(p))
		return w.c.Write(p)
	}
}

// frameLength returns the length of the websocket frame starting at p
// (header and payload), if p holds its whole header.
func frameLength(p []byte) (int64, bool) {
	if len(p) < 2 {
		return 0, false
	}
	hdr := int64(2)
	n := int64(p[1] & 0x7f)
	switch n {
	case 126:
		if len(p) < 4 {
			return 0, false
		}
		hdr, n = 4, int64(binary.BigEndian.Uint16(p[2:4]))
	case 127:
		if len(p) < 10 {
			return 0, false
		}
		hdr, n = 10, int64(binary.BigEndian.Uint64(p[2:10]))
		if n < 0 {
			return 0, false
		}
	}
	if p[1]&0x80 != 0 {
		hdr += 4
	}
	return hdr + n, true
}

// leanHijacker is handed to websocket.Accept instead of the
// http.ResponseWriter: its Hijack returns the connection wrapped in a
// leanConn with 16-byte bufio buffers, and drops net/http's own. conn is
// set once Hijack succeeded.
type leanHijacker struct {
	http.ResponseWriter
	conn *leanConn
}

func (h *leanHijacker) Unwrap() http.ResponseWriter { return h.ResponseWriter }

func (h *leanHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	lc, err := hijackLean(h.ResponseWriter)
	if err != nil {
		return nil, nil, err
	}
	lc.ws = true
	lc.brSm = bufio.NewReaderSize(lc, 16)
	h.conn = lc
	return lc, bufio.NewReadWriter(lc.brSm, bufio.NewWriterSize(lc, 16)), nil
}

// hijackLean takes the connection from net/http (any response header
// written so far is flushed) and wraps it in a leanConn that first replays
// the bytes already read past the request: those in net/http's reader and,
// when the connection had been handed back to net/http (reserver), those
// still in the previous leanConn, which it replaces.
func hijackLean(w http.ResponseWriter) (*leanConn, error) {
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	var pre []byte
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		pre = append(pre, b...)
	}
	if old, ok := c.(*leanConn); ok {
		pre = append(pre, old.pre...)
		if old.buf != nil {
			pre = append(pre, (*old.buf)[old.off:old.end]...)
			leanBufPool.Put(old.buf)
			old.buf = nil
		}
		c = old.Conn
	}
	return newLeanConn(c, pre), nil
}
