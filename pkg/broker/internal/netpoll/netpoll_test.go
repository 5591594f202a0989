package netpoll

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// availablePoller returns a new Poller, or skips the test where nothing
// parks.
func availablePoller(t *testing.T) *Poller {
	t.Helper()
	p := NewPoller()
	if !p.Available() {
		t.Skip("no epoll on this system: parking is disabled by design")
	}
	return p
}

// callsStay fails the test if calls is not want at any time during d.
func callsStay(t *testing.T, calls *atomic.Int32, want int32, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if n := calls.Load(); n != want {
			t.Fatalf("Readable called %d times, want %d", n, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type readableFunc func()

func (f readableFunc) Readable() { f() }

func TestPollerReportsReadableOnce(t *testing.T) {
	p := availablePoller(t)
	tests := []struct {
		name   string
		before bool // bytes arrive before the park
		close  bool // the peer goes away instead of writing
	}{
		{"bytes after park", false, false},
		{"bytes before park", true, false},
		{"peer closes", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := tcpPair(t)
			lc := newConn(server, nil)
			if tt.before {
				client.Write([]byte("x"))
			}
			var calls atomic.Int32
			fired := make(chan struct{}, 4)
			if _, ok := p.Park(lc.RawConn(), readableFunc(func() { calls.Add(1); fired <- struct{}{} })); !ok {
				t.Fatal("park failed")
			}
			switch {
			case tt.close:
				client.Close()
			case !tt.before:
				client.Write([]byte("x"))
			}
			select {
			case <-fired:
			case <-time.After(10 * time.Second):
				t.Fatal("Readable not called")
			}
			client.Write([]byte("y")) // not parked any more: no second call
			callsStay(t, &calls, 1, 300*time.Millisecond)
		})
	}
}

func TestPollerCancel(t *testing.T) {
	p := availablePoller(t)
	client, server := tcpPair(t)
	lc := newConn(server, nil)
	var calls atomic.Int32
	id, ok := p.Park(lc.RawConn(), readableFunc(func() { calls.Add(1) }))
	if !ok {
		t.Fatal("park failed")
	}
	p.Cancel(id)
	client.Write([]byte("x"))
	callsStay(t, &calls, 0, 300*time.Millisecond) // cancelled: never called
	// The poller's goroutine ends once nothing is parked.
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.mu.Lock()
		running := p.running
		p.mu.Unlock()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("poller goroutine still running with nothing parked")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConnReadsPreThenSocket(t *testing.T) {
	client, server := tcpPair(t)
	lc := newConn(server, []byte("ab"))
	if !lc.Buffered() {
		t.Fatal("pre bytes not reported as buffered")
	}
	client.Write([]byte("cdef"))
	got := make([]byte, 0, 6)
	buf := make([]byte, 3)
	for len(got) < 6 {
		n, err := lc.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "abcdef" {
		t.Fatalf("read %q, want abcdef", got)
	}
	if lc.Buffered() {
		t.Fatal("drained conn reports buffered bytes")
	}
	lc.Unread([]byte("z"))
	if n, _ := lc.Read(buf); string(buf[:n]) != "z" {
		t.Fatalf("after Unread read %q, want z", buf[:n])
	}
}

func TestConnFill(t *testing.T) {
	client, server := tcpPair(t)
	lc := newConn(server, nil)
	if lc.Fill(time.Now().Add(20 * time.Millisecond)) {
		t.Fatal("Fill reported bytes on a silent socket")
	}
	client.Write([]byte("hello"))
	if !lc.Fill(time.Now().Add(10 * time.Second)) {
		t.Fatal("Fill missed bytes")
	}
	if !lc.Buffered() {
		t.Fatal("filled conn not buffered")
	}
	_ = lc.SetReadDeadline(time.Time{})
	b := make([]byte, 5)
	if _, err := io.ReadFull(lc, b); err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v", b, err)
	}
}

func TestWriteNonBlocking(t *testing.T) {
	client, server := tcpPair(t)
	lc := newConn(server, nil)
	if lc.RawConn() == nil {
		t.Fatal("TCP conn without RawConn")
	}
	n, err := WriteNonBlocking(lc.RawConn(), []byte("ping"))
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 { // non-Linux: nothing written, by design
		t.Skip("WriteNonBlocking is Linux-only")
	}
	b := make([]byte, n)
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(client, b); err != nil || string(b) != "ping"[:n] {
		t.Fatalf("read %q, %v", b, err)
	}
}

// handBack answers a request "ok" on its hijacked connection and hands
// the connection back to rr's copy of the request's server.
func handBack(t *testing.T, rr *Reservers, w http.ResponseWriter, r *http.Request) {
	rs := rr.For(r.Context().Value(http.ServerContextKey).(*http.Server), true)
	lc, err := Hijack(w)
	if err != nil {
		t.Error(err)
		return
	}
	lc.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	if !rs.Inject(lc) {
		t.Error("inject refused")
	}
}

// serveOneConn serves srv on a loopback port until the test ends and
// returns get, which sends GET path on one kept-alive connection and
// returns the response body.
func serveOneConn(t *testing.T, srv *http.Server) (get func(path string) string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	return func(path string) string {
		t.Helper()
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
}

// TestReserverServesHandedBackConn hijacks a connection after one request,
// hands it back, and sees the next request on it served by the copy of
// the server.
func TestReserverServesHandedBackConn(t *testing.T) {
	var rr Reservers
	var served atomic.Int32
	srv := &http.Server{IdleTimeout: 3 * time.Second}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if r.URL.Path == "/hijack" {
			handBack(t, &rr, w, r)
			return
		}
		io.WriteString(w, "served "+r.URL.Path)
	})
	get := serveOneConn(t, srv)
	for _, path := range []string{"/hijack", "/next", "/hijack", "/last"} {
		want := "ok"
		if path != "/hijack" {
			want = "served " + path
		}
		if body := get(path); body != want {
			t.Fatalf("%s: body %q, want %q", path, body, want)
		}
	}
	if served.Load() != 4 {
		t.Fatalf("served %d requests, want 4", served.Load())
	}
	if rs := rr.For(srv, false); rs == nil || rs.IdleTimeout() != 3*time.Second || rs.WriteTimeout(time.Minute) != time.Minute {
		t.Fatalf("reserver limits not copied from the server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rr.Shutdown(ctx)
	if rr.For(srv, false).Inject(nopConn{}) {
		t.Fatal("inject accepted after Shutdown")
	}
	if rr.For(nil, true) != nil {
		t.Fatal("reserver for an unknown server")
	}
}

type nopConn struct{ net.Conn }

type hookKey string

// TestReserverKeepsServerHooks: requests on a handed-back connection see
// what their server's hooks give every request (BaseContext, ConnContext)
// and the connection's states are reported (ConnState).
func TestReserverKeepsServerHooks(t *testing.T) {
	var rr Reservers
	var states sync.Map // http.ConnState -> struct{}
	srv := &http.Server{
		BaseContext: func(net.Listener) context.Context {
			return context.WithValue(context.Background(), hookKey("base"), true)
		},
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, hookKey("conn"), true)
		},
		ConnState: func(_ net.Conn, st http.ConnState) { states.Store(st, struct{}{}) },
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hijack" {
			states.Clear() // from here on, the states of the handed-back connection
			handBack(t, &rr, w, r)
			return
		}
		io.WriteString(w, fmt.Sprintf("base=%v conn=%v", r.Context().Value(hookKey("base")), r.Context().Value(hookKey("conn"))))
	})
	t.Cleanup(func() { rr.Shutdown(context.Background()) })
	get := serveOneConn(t, srv)
	get("/hijack")
	if body := get("/next"); body != "base=true conn=true" {
		t.Errorf("request on the handed-back connection: %q, want base=true conn=true", body)
	}
	for _, st := range []http.ConnState{http.StateNew, http.StateActive} {
		if _, ok := states.Load(st); !ok {
			t.Errorf("handed-back connection: state %v not reported", st)
		}
	}
}

func TestInjectAddr(t *testing.T) {
	l := &injectListener{}
	if a := l.Addr(); a.Network() != "handed-back" || !strings.Contains(a.String(), "handed-back") {
		t.Fatalf("addr %v", a)
	}
}
