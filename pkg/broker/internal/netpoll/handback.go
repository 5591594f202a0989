package netpoll

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// Reservers keeps one Reserver per http.Server that connections were
// hijacked from. The zero value is ready to use.
type Reservers struct {
	mu     sync.Mutex
	byServ map[*http.Server]*Reserver // each Reserver also under its own clone
}

// For returns the Reserver for connections of srv, creating it if create
// is set (nil: srv is unknown, or none exists and create is false).
func (rr *Reservers) For(srv *http.Server, create bool) *Reserver {
	if srv == nil {
		return nil
	}
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if rs := rr.byServ[srv]; rs != nil || !create {
		return rs
	}
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	// Everything of srv that applies to serving one connection, hooks
	// included (a handed-back connection's requests see the contexts and
	// states its server would give them).
	clone := &http.Server{
		Handler:                      h,
		DisableGeneralOptionsHandler: srv.DisableGeneralOptionsHandler,
		ReadTimeout:                  srv.ReadTimeout,
		ReadHeaderTimeout:            srv.ReadHeaderTimeout,
		WriteTimeout:                 srv.WriteTimeout,
		IdleTimeout:                  srv.IdleTimeout,
		MaxHeaderBytes:               srv.MaxHeaderBytes,
		ErrorLog:                     srv.ErrorLog,
		ConnState:                    srv.ConnState,
		BaseContext:                  srv.BaseContext,
		ConnContext:                  srv.ConnContext,
	}
	rs := &Reserver{srv: clone, l: &injectListener{ready: make(chan struct{}, 1)}}
	rs.l.srv = clone
	if rr.byServ == nil {
		rr.byServ = map[*http.Server]*Reserver{}
	}
	rr.byServ[srv], rr.byServ[clone] = rs, rs
	return rs
}

// Shutdown shuts every Reserver down (see Reserver.Shutdown).
func (rr *Reservers) Shutdown(ctx context.Context) {
	rr.mu.Lock()
	all := make([]*Reserver, 0, len(rr.byServ))
	for srv, rs := range rr.byServ {
		if rs.srv == srv { // each once (a Reserver is also its own key)
			all = append(all, rs)
		}
	}
	rr.mu.Unlock()
	for _, rs := range all {
		rs.Shutdown(ctx)
	}
}

// Reserver serves connections handed back after a hijack, with the
// handler and limits of the http.Server they were accepted by. Its Serve
// loop runs only while connections are being handed in.
type Reserver struct {
	srv *http.Server
	l   *injectListener
}

// IdleTimeout is how long a handed-back connection may wait for its next
// request (the server's IdleTimeout, else its ReadTimeout; 0: no limit).
func (rs *Reserver) IdleTimeout() time.Duration {
	if rs.srv.IdleTimeout > 0 {
		return rs.srv.IdleTimeout
	}
	return rs.srv.ReadTimeout
}

// WriteTimeout is the server's WriteTimeout, or def if it has none.
func (rs *Reserver) WriteTimeout(def time.Duration) time.Duration {
	if rs.srv.WriteTimeout > 0 {
		return rs.srv.WriteTimeout
	}
	return def
}

// Inject queues c for the Reserver's Serve loop (starting it if needed);
// false if the Reserver is shut down (c is then the caller's to close).
func (rs *Reserver) Inject(c net.Conn) bool {
	l := rs.l
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.queue = append(l.queue, c)
	start := !l.serving
	l.serving = true
	l.mu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default:
	}
	if start {
		go l.serve()
	}
	return true
}

// Shutdown closes queued connections and shuts the server copy down
// (closing it when ctx ends first).
func (rs *Reserver) Shutdown(ctx context.Context) {
	rs.l.mu.Lock()
	rs.l.closed = true
	queued := rs.l.queue
	rs.l.queue = nil
	rs.l.mu.Unlock()
	for _, c := range queued {
		_ = c.Close()
	}
	if err := rs.srv.Shutdown(ctx); err != nil {
		_ = rs.srv.Close()
	}
}

// injectListener is the Reserver's listener: Accept returns handed-in
// connections and, after injectIdle without any, an error that ends the
// Serve loop (restarted by the next Inject), so no goroutine waits for
// connections that may never come.
type injectListener struct {
	srv     *http.Server
	mu      sync.Mutex
	queue   []net.Conn
	serving bool
	closed  bool
	ready   chan struct{} // cap 1: queue may be non-empty
}

var errInjectIdle = errors.New("netpoll: no connection handed back for a while")

const injectIdle = 100 * time.Millisecond

func (l *injectListener) serve() {
	err := l.srv.Serve(l)
	if !errors.Is(err, http.ErrServerClosed) {
		return // errInjectIdle: serving is false again
	}
	l.mu.Lock()
	l.closed, l.serving = true, false
	queued := l.queue
	l.queue = nil
	l.mu.Unlock()
	for _, c := range queued {
		_ = c.Close()
	}
}

func (l *injectListener) Accept() (net.Conn, error) {
	t := time.NewTimer(injectIdle)
	defer t.Stop()
	for {
		l.mu.Lock()
		if len(l.queue) > 0 {
			c := l.queue[0]
			l.queue[0] = nil
			l.queue = l.queue[1:]
			l.mu.Unlock()
			return c, nil
		}
		if l.closed {
			l.serving = false
			l.mu.Unlock()
			return nil, net.ErrClosed
		}
		l.mu.Unlock()
		select {
		case <-l.ready:
		case <-t.C:
			l.mu.Lock()
			idle := len(l.queue) == 0
			if idle {
				l.serving = false
			}
			l.mu.Unlock()
			if idle {
				return nil, errInjectIdle
			}
			t.Reset(injectIdle)
		}
	}
}

// Close is called by http.Server.Serve when it returns; the listener
// stays usable for the next Serve (Shutdown closes it for good).
func (l *injectListener) Close() error { return nil }

func (l *injectListener) Addr() net.Addr { return injectAddr{} }

type injectAddr struct{}

func (injectAddr) Network() string { return "handed-back" }
func (injectAddr) String() string  { return "handed-back" }
