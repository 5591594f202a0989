package broker

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/wsframe"
)

// rawWS is a websocket client written byte by byte, to send what a library
// would not (unmasked frames, pings, bare close frames) and to see every
// frame the broker writes.
type rawWS struct {
	c  net.Conn
	br *bufio.Reader
}

func rawWSDial(t *testing.T, tb *testBroker, version string) (*rawWS, string) {
	t.Helper()
	addr := strings.TrimPrefix(tb.srv.URL, "http://")
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	key := "dGhlIHNhbXBsZSBub25jZQ=="
	fmt.Fprintf(c, "GET /cometd HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: %s\r\nSec-WebSocket-Key: %s\r\n\r\n", addr, version, key)
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(res.Body, 512))
	if res.StatusCode != http.StatusSwitchingProtocols {
		return nil, fmt.Sprintf("%d %s", res.StatusCode, body)
	}
	if got := res.Header.Get("Sec-WebSocket-Accept"); got != wsframe.AcceptKey(key) {
		t.Fatalf("Sec-WebSocket-Accept %q", got)
	}
	return &rawWS{c: c, br: br}, ""
}

// send writes one frame; masked as a client must, unless told otherwise.
func (w *rawWS) send(t *testing.T, fin bool, op wsframe.Opcode, p []byte, masked bool) {
	t.Helper()
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	f := []byte{b0, byte(len(p))} // test payloads are under 126 bytes
	if masked {
		f[1] |= 0x80
		key := []byte{1, 2, 3, 4}
		f = append(f, key...)
		for i, c := range p {
			f = append(f, c^key[i%4])
		}
	} else {
		f = append(f, p...)
	}
	if _, err := w.c.Write(f); err != nil {
		t.Fatal(err)
	}
}

// recv reads one server frame.
func (w *rawWS) recv(t *testing.T) (wsframe.Opcode, []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(w.br, h[:]); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	if h[0]&0x80 == 0 || h[1]&0x80 != 0 {
		t.Fatalf("server frame not final or masked: % x", h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		_, _ = io.ReadFull(w.br, e[:])
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		_, _ = io.ReadFull(w.br, e[:])
		n = binary.BigEndian.Uint64(e[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(w.br, p); err != nil {
		t.Fatalf("read payload: %v", err)
	}
	return wsframe.Opcode(h[0] & 0x0f), p
}

// closed reads a close frame, then expects the connection to end.
func (w *rawWS) closed(t *testing.T, code wsframe.StatusCode) string {
	t.Helper()
	op, p := w.recv(t)
	if op != wsframe.OpClose || wsframe.CloseCode(p) != code {
		t.Fatalf("want close %d, got op %d %q", code, op, p)
	}
	if _, err := w.br.ReadByte(); err != io.EOF {
		t.Fatalf("connection still open after the close frame (%v)", err)
	}
	return string(p[2:])
}

func TestWebSocketProtocol(t *testing.T) {
	tb := newTestBroker(t, nil)
	handshake := []byte(`[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"],"id":"h"}]`)
	cases := []struct {
		name string
		run  func(t *testing.T, w *rawWS)
	}{
		{"ping answered with its payload", func(t *testing.T, w *rawWS) {
			w.send(t, true, wsframe.OpPing, []byte("are you there"), true)
			if op, p := w.recv(t); op != wsframe.OpPong || string(p) != "are you there" {
				t.Fatalf("got op %d %q", op, p)
			}
		}},
		{"fragmented request with a ping between", func(t *testing.T, w *rawWS) {
			w.send(t, false, wsframe.OpText, handshake[:30], true)
			w.send(t, true, wsframe.OpPing, nil, true)
			w.send(t, true, wsframe.OpContinuation, handshake[30:], true)
			if op, _ := w.recv(t); op != wsframe.OpPong {
				t.Fatalf("first frame op %d, want the pong", op)
			}
			if op, p := w.recv(t); op != wsframe.OpText || !strings.Contains(string(p), `"successful":true`) {
				t.Fatalf("handshake reply op %d %s", op, p)
			}
		}},
		{"close echoed", func(t *testing.T, w *rawWS) {
			w.send(t, true, wsframe.OpClose, []byte{0x0f, 0xa0, 'b', 'y', 'e'}, true) // 4000
			w.closed(t, 4000)
		}},
		{"unmasked frame is a protocol error", func(t *testing.T, w *rawWS) {
			w.send(t, true, wsframe.OpText, handshake, false)
			w.closed(t, wsframe.StatusProtocolError)
		}},
		{"undecodable message closes with 1007 and the Bayeux error", func(t *testing.T, w *rawWS) {
			w.send(t, true, wsframe.OpText, []byte(`[{"channel":`), true)
			if reason := w.closed(t, wsframe.StatusInvalidPayload); !strings.HasPrefix(reason, "400:") {
				t.Fatalf("close reason %q", reason)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w, refused := rawWSDial(t, tb, "13")
			if w == nil {
				t.Fatalf("upgrade refused: %s", refused)
			}
			c.run(t, w)
		})
	}
	t.Run("bad upgrade refused with 4xx", func(t *testing.T) {
		w, refused := rawWSDial(t, tb, "8")
		if w != nil || !strings.HasPrefix(refused, "426") {
			t.Fatalf("got %q", refused)
		}
	})
	// The node still serves after all of the above.
	if id := tb.handshake(t, nil); id == "" {
		t.Fatal("no session after the bad sockets")
	}
}

// A subscriber that stops reading: deliveries written from the publishing
// goroutine (wsConn.flushInline) fill the socket, the unsent tail of a
// frame goes to the writer goroutine, and once the client reads again it
// gets every message, in order, in well-formed frames.
func TestWebSocketSubscriberStopsReading(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) {
		c.MaxQueueMessages, c.MaxQueueBytes = 10000, 64<<20
		// The session must outlive a slow run (publishing under -race on a
		// loaded machine takes seconds): this test sends no connect after
		// the held one, which would otherwise time out and let the session
		// expire mid-stream.
		c.Timeout, c.MaxInterval = time.Minute, time.Minute
	})
	addr := strings.TrimPrefix(tb.srv.URL, "http://")
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "GET /cometd HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", addr)
	w := &rawWS{c: c, br: bufio.NewReaderSize(c, 64)}
	if res, err := http.ReadResponse(w.br, nil); err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", res, err)
	}
	send := func(m string) {
		w.send(t, true, wsframe.OpText, []byte(m), true)
		if op, p := w.recv(t); op != wsframe.OpText || !strings.Contains(string(p), `"successful":true`) {
			t.Fatalf("reply to %s: %s", m, p)
		}
	}
	w.send(t, true, wsframe.OpText, []byte(`[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}]`), true)
	_, p := w.recv(t)
	var hs []map[string]any
	if err := json.Unmarshal(p, &hs); err != nil || len(hs) != 1 || hs[0]["clientId"] == nil {
		t.Fatalf("handshake: %s", p)
	}
	id := hs[0]["clientId"].(string)
	send(`[{"channel":"/meta/subscribe","clientId":"` + id + `","subscription":"/slow"}]`)
	// A held connect attaches the socket to the session; its replies are
	// skipped below.
	connect := `[{"channel":"/meta/connect","clientId":"` + id + `","connectionType":"websocket"}]`
	send(connect) // the first is answered at once
	w.send(t, true, wsframe.OpText, []byte(connect), true)
	tb.waitHeld(t, id)
	// No writer goroutine lingers from the replies: deliveries start
	// inline.
	eventually(t, 3*wsWriterLinger, func() error {
		if n := tb.lingering.Load(); n != 0 {
			return fmt.Errorf("%d writers linger", n)
		}
		return nil
	})

	// 1,500 messages of 2 KB (3 MB), far more than the socket buffers
	// take while nobody reads, published in batches over HTTP.
	const total, batch = 1500, 100
	pad := strings.Repeat("x", 2048)
	pub := tb.handshake(t, nil)
	for i := 0; i < total; i += batch {
		var msgs []msg
		for j := i; j < i+batch; j++ {
			msgs = append(msgs, msg{"channel": "/slow", "clientId": pub, "data": msg{"seq": j, "pad": pad}})
		}
		if res := post(t, nil, tb.url, msgs); len(res.Msgs) != batch {
			t.Fatalf("publish batch at %d: %s", i, res.Body)
		}
	}
	next := 0
	for next < total {
		// A deadline per frame, not for the whole stream: on a loaded
		// machine (race detector, parallel packages) 3 MB may take longer
		// than one deadline, but the stream must never stall.
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		op, p := w.recv(t)
		if op != wsframe.OpText {
			t.Fatalf("after %d messages: frame op %d %.80q", next, op, p)
		}
		var got []struct {
			Channel string
			Data    struct{ Seq int }
		}
		if err := json.Unmarshal(p, &got); err != nil {
			t.Fatalf("after %d messages: frame is not JSON: %v", next, err)
		}
		for _, m := range got {
			if m.Channel != "/slow" {
				continue
			}
			if m.Data.Seq != next {
				t.Fatalf("got seq %d, want %d", m.Data.Seq, next)
			}
			next++
		}
	}
}

// A client that stops in the middle of a frame is disconnected after
// WebSocketFrameTimeout; one that sends nothing at all between frames is
// not.
func TestWebSocketFrameTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tb := newTestBroker(t, func(c *Config) { c.WebSocketFrameTimeout = timeout })

	idle, refused := rawWSDial(t, tb, "13")
	if idle == nil {
		t.Fatalf("upgrade refused: %s", refused)
	}
	stalled, refused := rawWSDial(t, tb, "13")
	if stalled == nil {
		t.Fatalf("upgrade refused: %s", refused)
	}
	start := time.Now()
	if _, err := stalled.c.Write([]byte{0x81, 0x80 | 20, 1, 2}); err != nil { // header of a 20-byte frame, half its key
		t.Fatal(err)
	}
	if reason := stalled.closed(t, wsframe.StatusPolicyViolation); !strings.Contains(reason, "in time") {
		t.Fatalf("close reason %q", reason)
	}
	if took := time.Since(start); took < timeout/2 {
		t.Fatalf("closed after %v, before the frame timeout", took)
	}

	// The idle socket, silent for longer than the timeout, still answers.
	time.Sleep(3 * timeout)
	idle.send(t, true, wsframe.OpPing, []byte("still here"), true)
	if op, p := idle.recv(t); op != wsframe.OpPong || string(p) != "still here" {
		t.Fatalf("idle socket: op %d %q", op, p)
	}
}
