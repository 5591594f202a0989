package wsconformance

import (
	"bufio"
	"bytes"
	"compress/flate"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // RFC 6455 mandates SHA-1 for the accept key
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// The raw-socket client of the suite: it builds every frame itself (RFC
// 6455 section 5), checks every frame the server sends, and compresses
// and inflates permessage-deflate messages without context takeover.

// Opcodes (RFC 6455 section 5.2).
const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

// ioTimeout bounds every read and write of the suite (a loaded machine).
const ioTimeout = 15 * time.Second

// frame is one frame the client sends.
type frame struct {
	fin     bool
	rsv     byte // bits 0x40 (RSV1), 0x20 (RSV2), 0x10 (RSV3)
	op      byte
	payload []byte
	length  int64 // declared payload length if > 0 and payload is nil (a header only)
}

func text(p []byte) frame      { return frame{fin: true, op: opText, payload: p} }
func first(p []byte) frame     { return frame{op: opText, payload: p} }
func cont(p []byte) frame      { return frame{op: opCont, payload: p} }
func last(p []byte) frame      { return frame{fin: true, op: opCont, payload: p} }
func ping(p string) frame      { return frame{fin: true, op: opPing, payload: []byte(p)} }
func pong(p string) frame      { return frame{fin: true, op: opPong, payload: []byte(p)} }
func binaryMsg(p []byte) frame { return frame{fin: true, op: opBinary, payload: p} }

func closeFrame(code uint16, reason string) frame {
	p := binary.BigEndian.AppendUint16(nil, code)
	return frame{fin: true, op: opClose, payload: append(p, reason...)}
}

// serverFrame is one frame received, payload inflated if it was compressed.
type serverFrame struct {
	op         byte
	fin        bool
	compressed bool
	payload    []byte
}

// client is one raw websocket connection to the node.
type client struct {
	t       testing.TB
	conn    net.Conn
	br      *bufio.Reader
	deflate bool          // permessage-deflate negotiated
	ext     string        // the server's Sec-WebSocket-Extensions answer
	chop    int           // > 0: frames are written in TCP writes of chop bytes
	pace    time.Duration // pause between chopped writes
	loose   bool          // write errors are ignored: the server may close first
	pending []string      // ids of replies received and not yet expected, in order
}

// dial opens a websocket to the node at rawURL (http://host/path),
// offering the extensions in offer (empty: none).
func dial(t testing.TB, rawURL, offer string) *client {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, ioTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", u.Host, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	req := "GET " + u.Path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n"
	if offer != "" {
		req += "Sec-WebSocket-Extensions: " + offer + "\r\n"
	}
	c := &client{t: t, conn: conn, br: bufio.NewReader(conn)}
	_ = conn.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		t.Fatalf("handshake write: %v", err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("handshake read: %v", err)
	}
	_ = resp.Body.Close()
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")) //nolint:gosec // see import
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(h[:]) {
		t.Fatalf("handshake: status %d, accept %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	c.ext = strings.Join(resp.Header.Values("Sec-WebSocket-Extensions"), ", ")
	switch {
	case c.ext == "":
	case offer == "" || !strings.HasPrefix(c.ext, "permessage-deflate"):
		t.Fatalf("handshake: extension %q answered to offer %q", c.ext, offer)
	default:
		c.deflate = true
	}
	return c
}

// encode masks f with a random key (RFC 6455 section 5.3).
func encode(f frame) []byte {
	b0 := f.op | f.rsv
	if f.fin {
		b0 |= 0x80
	}
	n := int64(len(f.payload))
	if f.payload == nil && f.length > 0 {
		n = f.length
	}
	out := []byte{b0}
	switch {
	case n <= 125:
		out = append(out, 0x80|byte(n))
	case n <= 65535:
		out = append(out, 0x80|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	out = append(out, key[:]...)
	for i, b := range f.payload {
		out = append(out, b^key[i&3])
	}
	return out
}

// send writes frames back to back (chopped and paced if the client is).
func (c *client) send(frames ...frame) {
	c.t.Helper()
	var b []byte
	for _, f := range frames {
		b = append(b, encode(f)...)
	}
	c.write(b)
}

func (c *client) write(b []byte) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	step := len(b)
	if c.chop > 0 {
		step = c.chop
	}
	for len(b) > 0 {
		n := min(step, len(b))
		if _, err := c.conn.Write(b[:n]); err != nil {
			if c.loose {
				return
			}
			c.t.Fatalf("write: %v", err)
		}
		b = b[n:]
		if c.pace > 0 && len(b) > 0 {
			time.Sleep(c.pace) // pacing the case's bytes, not synchronization
		}
	}
}

// deflateMessage compresses p as one permessage-deflate message without
// context takeover (RFC 7692 section 7.2.1).
func deflateMessage(p []byte) []byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	_, _ = w.Write(p)
	_ = w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

// compressed is a final text frame with p compressed (RSV1).
func compressed(p []byte) frame {
	return frame{fin: true, rsv: 0x40, op: opText, payload: deflateMessage(p)}
}

// inflate decompresses one message's payload with a fresh decompressor.
func inflate(p []byte) ([]byte, error) {
	tail := []byte{0, 0, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}
	return io.ReadAll(flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader(tail))))
}

// read returns the next server frame, failing the test if it breaks RFC
// 6455 or 7692.
func (c *client) read() serverFrame {
	c.t.Helper()
	f, err := c.readFrame()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

func (c *client) readFrame() (serverFrame, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return serverFrame{}, err
	}
	f := serverFrame{op: h[0] & 0x0f, fin: h[0]&0x80 != 0, compressed: h[0]&0x40 != 0}
	if h[0]&0x30 != 0 || (f.compressed && (!c.deflate || f.op != opText)) {
		return f, fmt.Errorf("server frame %#x with reserved bits (deflate negotiated: %v)", h[0], c.deflate)
	}
	if h[1]&0x80 != 0 {
		return f, errors.New("server frame masked")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(c.br, e[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(c.br, e[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(e[:])
	}
	if n > 64<<20 {
		return f, fmt.Errorf("server frame of %d bytes", n)
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(c.br, f.payload); err != nil {
		return f, err
	}
	switch f.op {
	case opClose, opPing, opPong:
		if !f.fin || n > 125 {
			return f, fmt.Errorf("server control frame fragmented or of %d bytes", n)
		}
	case opText:
		if !f.fin {
			return f, errors.New("server fragmented a message (the suite does not expect it)")
		}
	default:
		return f, fmt.Errorf("server frame with opcode %d", f.op)
	}
	if f.compressed {
		p, err := inflate(f.payload)
		if err != nil {
			return f, fmt.Errorf("inflate a server message: %w", err)
		}
		f.payload = p
	}
	if f.op == opText && !utf8.Valid(f.payload) {
		return f, errors.New("server text message is not UTF-8")
	}
	return f, nil
}

// expectEcho expects the reply to bayeux(id) next: the server may answer
// several requests in one frame (a JSON array of their replies), so the
// replies are taken in order from the frames read.
func (c *client) expectEcho(id string) {
	c.t.Helper()
	for len(c.pending) == 0 {
		f := c.read()
		if f.op != opText {
			c.t.Fatalf("want the reply to %.40q, got opcode %d %.80q", id, f.op, f.payload)
		}
		var msgs []struct {
			ID      string `json:"id"`
			Channel string `json:"channel"`
		}
		if err := json.Unmarshal(f.payload, &msgs); err != nil {
			c.t.Fatalf("reply is not a Bayeux array: %v: %.200q", err, f.payload)
		}
		for _, m := range msgs {
			if m.Channel != "/meta/connect" {
				c.t.Fatalf("reply %.200q is not to a /meta/connect", f.payload)
			}
			c.pending = append(c.pending, m.ID)
		}
	}
	got := c.pending[0]
	c.pending = c.pending[1:]
	if got != id {
		c.t.Fatalf("want the reply to %.40q, got the reply to %.40q", id, got)
	}
}

// sendAsync writes frames from another goroutine (for a client that reads
// replies meanwhile) and reports the write error, if any.
func (c *client) sendAsync(frames ...frame) <-chan error {
	var b []byte
	for _, f := range frames {
		b = append(b, encode(f)...)
	}
	done := make(chan error, 1)
	go func() {
		_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
		_, err := c.conn.Write(b)
		done <- err
	}()
	return done
}

// expectPong reads a pong with payload p.
func (c *client) expectPong(p string) {
	c.t.Helper()
	if f := c.read(); f.op != opPong || string(f.payload) != p {
		c.t.Fatalf("want pong %q, got opcode %d %.80q", p, f.op, f.payload)
	}
}

// expectPongs reads pongs for pings sent back to back: each is the
// payload of one of them, in order, and the last ping's comes last.
func (c *client) expectPongs(pings []string) {
	c.t.Helper()
	next := 0
	for {
		f := c.read()
		if f.op != opPong {
			c.t.Fatalf("want pongs, got opcode %d", f.op)
		}
		i := next
		for i < len(pings) && pings[i] != string(f.payload) {
			i++
		}
		if i == len(pings) {
			c.t.Fatalf("pong %q answers no ping after the %dth", f.payload, next)
		}
		if i == len(pings)-1 {
			return
		}
		next = i + 1
	}
}

// expectClose reads a close frame with code (0: a close frame without a
// code) and then the end of the TCP stream.
func (c *client) expectClose(code uint16) {
	c.t.Helper()
	f, err := c.readFrame()
	if err != nil {
		c.t.Fatalf("want close %d, got %v", code, err)
	}
	if f.op != opClose {
		c.t.Fatalf("want close %d, got opcode %d %.80q", code, f.op, f.payload)
	}
	got := uint16(0)
	if len(f.payload) >= 2 {
		got = binary.BigEndian.Uint16(f.payload)
	}
	if got != code || len(f.payload) == 1 || !utf8.Valid(f.payload[min(2, len(f.payload)):]) {
		c.t.Fatalf("want close %d, got close %d %q", code, got, f.payload)
	}
	c.expectEOF()
}

// expectEOF reads the end of the TCP stream (FIN, or a reset when the
// server closed with bytes of ours unread).
func (c *client) expectEOF() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	n, err := c.br.Read(make([]byte, 1))
	if n > 0 || (err != io.EOF && !errors.Is(err, syscall.ECONNRESET)) {
		c.t.Fatalf("want the end of the stream after the close frame, got %d bytes, %v", n, err)
	}
}

// closeNormally ends a case that passed: close 1000, echoed.
func (c *client) closeNormally() {
	c.t.Helper()
	c.chop, c.pace = 0, 0
	c.send(closeFrame(1000, "done"))
	c.expectClose(1000)
}

// bayeux is the Bayeux message standing for an echo of id (see doc.go):
// id is put unescaped unless it holds a quote, a backslash or a control
// character, which are escaped as JSON requires.
func bayeux(id string) []byte {
	b := []byte(`[{"channel":"/meta/connect","clientId":"conformance","connectionType":"websocket","id":"`)
	for i := 0; i < len(id); i++ {
		switch ch := id[i]; {
		case ch == '"' || ch == '\\':
			b = append(b, '\\', ch)
		case ch < 0x20:
			b = fmt.Appendf(b, `\u%04x`, ch)
		default:
			b = append(b, ch)
		}
	}
	return append(b, `"}]`...)
}
