package broker

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/internal/netpoll"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// A held long-polling /meta/connect costs, while net/http serves it, a
// handler goroutine, net/http's background-read goroutine, a 4 KB
// bufio.Reader, a 4 KB bufio.Writer, a 2 KB response buffer and the
// request's state. parkLongPoll takes such a connection out of net/http
// instead: it hijacks it, waits without a goroutine (the session and a
// timer kick it; the netpoll.Poller reports a client that goes away), writes
// the HTTP response itself, then waits, again without a goroutine, for
// the client's next request and hands the connection back to an
// http.Server configured like the one it came from (netpoll.Reservers). Requests
// that cannot be parked this way (TLS, HTTP/2, HTTP/1.0, Connection:
// close, no epoll) are held by their handler as before.

// parkedPoll is one hijacked long-polling connection. Phases, under mu:
// holding (the connect is held), finishing (a goroutine answers it), idle
// (answered; waiting for the next request), done. Each transition is made
// once, by whoever moves it out of the phase.
type parkedPoll struct {
	b      *Broker
	lc     *netpoll.Conn
	rs     *netpoll.Reserver
	hc     *heldConnect
	head   []byte      // status line and header fields, without Content-Length
	timer  *time.Timer // idle: closes the connection after the server's idle timeout
	mu     sync.Mutex
	phase  uint8
	kicked bool   // schedule was called while the readable check ran
	pollID uint64 // parked in the poller under this id
}

const (
	parkHolding uint8 = iota
	parkChecking
	parkFinishing
	parkIdle
	parkDone
)

// parkLongPoll tries to hold hc without the handler; true means the
// connection is taken over (the handler must return without writing).
// replies are written before the connect's reply.
func (b *Broker) parkLongPoll(w http.ResponseWriter, r *http.Request, hc *heldConnect, replies []*protocol.Reply) bool {
	if hc.immediate || len(replies) > 0 || r.ProtoMajor != 1 || r.ProtoMinor == 0 || r.Close || r.TLS != nil || !b.poller.Available() {
		return false
	}
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	rs := b.reservers.For(srv, !b.shuttingDown.Load())
	if rs == nil || hc.s.hasDeliveries() {
		return false
	}
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 200 OK\r\n")
	_ = h.Write(&head)
	lc, err := netpoll.Hijack(w)
	if err != nil {
		h.Del("Content-Type")
		return false
	}
	hc.detach()
	p := &parkedPoll{b: b, lc: lc, rs: rs, hc: hc, head: head.Bytes()}
	b.conns.trackParked(p, true)
	hc.hold(p) // schedules p at once if the connect is due already
	p.mu.Lock()
	if p.phase == parkHolding {
		if id, ok := b.poller.Park(lc.RawConn(), p); ok {
			p.pollID = id
		}
	}
	p.mu.Unlock()
	return true
}

// schedule (connectHolder) answers the held connect (woken, ended or
// timed out); in any other phase it does nothing. It never blocks:
// sessions call it with their lock held.
func (p *parkedPoll) schedule() {
	p.mu.Lock()
	switch p.phase {
	case parkHolding:
		p.phase = parkFinishing
		p.mu.Unlock()
		go p.finish(true)
		return
	case parkChecking:
		p.kicked = true
	}
	p.mu.Unlock()
}

// idleExpired closes a connection whose next request did not come within
// the server's idle timeout.
func (p *parkedPoll) idleExpired() {
	p.mu.Lock()
	idle := p.phase == parkIdle
	if idle {
		p.phase = parkDone
	}
	p.mu.Unlock()
	if idle {
		p.close()
	}
}

// Readable (netpoll.Readable): while holding, the client sent bytes or went away; while
// idle, its next request is arriving.
func (p *parkedPoll) Readable() {
	p.mu.Lock()
	p.pollID = 0
	switch p.phase {
	case parkIdle:
		p.phase = parkDone
		if p.timer != nil {
			p.timer.Stop()
		}
		p.mu.Unlock()
		p.handBack()
		return
	case parkHolding:
		p.phase = parkChecking
	default:
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	var one [1]byte
	n, err := p.lc.Conn.Read(one[:])
	if n > 0 { // pipelined: keep it for the next request (no more watching)
		p.lc.Unread(one[:])
	}
	p.mu.Lock()
	if p.phase != parkChecking { // ended meanwhile (Shutdown)
		p.mu.Unlock()
		return
	}
	gone, kicked := n == 0 || err != nil, p.kicked
	if gone || kicked {
		p.phase = parkFinishing
	} else {
		p.phase = parkHolding
	}
	p.mu.Unlock()
	if gone || kicked {
		p.finish(!gone)
	}
}

// finish answers the connect (deliver=false: the client is gone, queued
// messages wait for its next connect), then waits for the next request.
func (p *parkedPoll) finish(deliver bool) {
	b := p.b
	p.unpark()
	pubs, drop := p.hc.answer(deliver)
	if !deliver || drop { // drop: debug API, lose this reply in transit
		p.end()
		return
	}
	body := appendResponse(nil, nil, pubs, p.hc.reply)
	p.hc = nil
	msg := append(p.head, "Content-Length: "...)
	msg = strconv.AppendInt(msg, int64(len(body)), 10)
	msg = append(msg, "\r\nDate: "...)
	msg = time.Now().UTC().AppendFormat(msg, http.TimeFormat)
	msg = append(append(msg, "\r\n\r\n"...), body...)
	p.head = nil
	_ = p.lc.SetWriteDeadline(time.Now().Add(p.rs.WriteTimeout(wsWriteTimeout)))
	_, err := p.lc.Conn.Write(msg)
	_ = p.lc.SetWriteDeadline(time.Time{})
	if err != nil || b.shuttingDown.Load() {
		p.end()
		return
	}
	p.mu.Lock()
	if p.phase == parkDone { // ended by Shutdown meanwhile
		p.mu.Unlock()
		p.close()
		return
	}
	p.phase = parkIdle
	p.timer = nil
	if idle := p.rs.IdleTimeout(); idle > 0 {
		p.timer = time.AfterFunc(idle, p.idleExpired)
	}
	parked := false
	if !p.lc.Buffered() {
		if id, ok := p.b.poller.Park(p.lc.RawConn(), p); ok {
			p.pollID, parked = id, true
		}
	}
	if !parked {
		p.phase = parkDone
		if p.timer != nil {
			p.timer.Stop()
		}
	}
	p.mu.Unlock()
	if !parked {
		p.handBack()
	}
}

// handBack gives the connection to the reserver for its next request.
func (p *parkedPoll) handBack() {
	p.b.conns.trackParked(p, false)
	if !p.rs.Inject(p.lc) {
		_ = p.lc.Close()
	}
}

// end closes the connection for good; a connect still held is ended
// without a reply.
func (p *parkedPoll) end() {
	p.mu.Lock()
	holding := p.phase == parkHolding || p.phase == parkChecking
	p.phase = parkDone
	if p.timer != nil {
		p.timer.Stop()
	}
	p.mu.Unlock()
	if holding {
		p.hc.cancel()
	}
	p.close()
}

// unpark takes the connection out of the poller, if it is there.
func (p *parkedPoll) unpark() {
	p.mu.Lock()
	id := p.pollID
	p.pollID = 0
	p.mu.Unlock()
	if id != 0 {
		p.b.poller.Cancel(id)
	}
}

func (p *parkedPoll) close() {
	p.unpark()
	_ = p.lc.Close()
	p.b.conns.trackParked(p, false)
}

// terminate is Shutdown's: an idle connection is closed; a held one is
// answered by Shutdown ending its waiter.
func (p *parkedPoll) terminate() {
	p.mu.Lock()
	idle := p.phase == parkIdle
	if idle {
		p.phase = parkDone
		if p.timer != nil {
			p.timer.Stop()
		}
	}
	p.mu.Unlock()
	if idle {
		p.close()
	}
}

// closeParked closes idle parked connections, waits (until ctx ends) for
// held ones to be answered, then shuts the reservers down.
func (b *Broker) closeParked(ctx context.Context) {
	for {
		left := b.conns.parkedPolls()
		if len(left) == 0 || ctx.Err() != nil {
			for _, p := range left {
				p.end()
			}
			break
		}
		for _, p := range left {
			p.terminate()
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	b.reservers.Shutdown(ctx)
}
