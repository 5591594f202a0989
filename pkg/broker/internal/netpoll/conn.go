package netpoll

import (
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// Memory of a long-lived connection (a websocket, a parked long-poll)
// matters more than its speed: net/http keeps a 4 KB bufio.Reader and a
// 4 KB bufio.Writer per connection and hands both over on Hijack. A
// Conn replaces them: reads borrow a pooled buffer only while bytes
// are waiting, and writes go straight to the socket (the websocket writer
// builds each frame in one buffer).

const leanReadBuf = 4 << 10

var leanBufPool = sync.Pool{New: func() any { b := make([]byte, leanReadBuf); return &b }}

// Conn wraps a hijacked connection. Reads are served from pre (bytes
// net/http had buffered), then from a pooled buffer filled by one read of
// the socket and returned to the pool as soon as it is drained. Writes are
// the socket's.
//
// Concurrency: the read side (Read, buffered) is used by one reader at a
// time and the write side (Write) by one writer at a time; the two sides
// share nothing.
type Conn struct {
	net.Conn
	pre []byte
	buf *[]byte // pooled, holding buf[off:end] unread; nil when drained
	off int
	end int
	rc  syscall.RawConn // nil: not parkable (TLS, or not a socket)
}

func newConn(c net.Conn, pre []byte) *Conn {
	lc := &Conn{Conn: c, pre: pre}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			lc.rc = rc
		}
	}
	return lc
}

func (lc *Conn) Read(p []byte) (int, error) {
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

// Fill waits until deadline for bytes and buffers what one read returns;
// it reports whether it got any. A timeout, or any other error, reports
// false and leaves the connection as it was (the error shows again on the
// next read) except for its read deadline, which stays at deadline: the
// caller sets the next one. Call it only from the reader, with nothing
// buffered.
func (lc *Conn) Fill(deadline time.Time) bool {
	if lc.SetReadDeadline(deadline) != nil {
		return false
	}
	b := leanBufPool.Get().(*[]byte)
	n, _ := lc.Conn.Read(*b)
	if n <= 0 {
		leanBufPool.Put(b)
		return false
	}
	lc.buf, lc.off, lc.end = b, 0, n
	return true
}

// Buffered reports whether bytes were read from the socket and not yet
// consumed. Call it only from the reader, between reads.
func (lc *Conn) Buffered() bool {
	return len(lc.pre) > 0 || lc.buf != nil
}

// Hijack takes the connection from net/http (any response header
// written so far is flushed) and wraps it in a Conn that first replays
// the bytes already read past the request: those in net/http's reader and,
// when the connection had been handed back to net/http (Reservers), those
// still in the previous Conn, which it replaces.
func Hijack(w http.ResponseWriter) (*Conn, error) {
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	var pre []byte
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		pre = append(pre, b...)
	}
	if old, ok := c.(*Conn); ok {
		pre = append(pre, old.pre...)
		if old.buf != nil {
			pre = append(pre, (*old.buf)[old.off:old.end]...)
			leanBufPool.Put(old.buf)
			old.buf = nil
		}
		c = old.Conn
	}
	return newConn(c, pre), nil
}

// RawConn returns the socket for Poller.Park and WriteNonBlocking; nil when
// the connection cannot be parked (TLS, or not a socket).
func (lc *Conn) RawConn() syscall.RawConn { return lc.rc }

// Unread puts bytes read from the socket directly (lc.Conn.Read) back in
// front of what Read returns next. Call it only from the reader.
func (lc *Conn) Unread(p []byte) { lc.pre = append(lc.pre, p...) }
