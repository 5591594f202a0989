package broker

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
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
