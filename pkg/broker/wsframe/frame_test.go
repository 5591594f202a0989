package wsframe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

// clientFrame builds a masked client frame (fin, opcode, payload) the way
// RFC 6455 section 5.3 says, with a fixed key.
func clientFrame(fin bool, op Opcode, p []byte) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	f := []byte{b0}
	switch n := len(p); {
	case n <= 125:
		f = append(f, 0x80|byte(n))
	case n <= 65535:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	default:
		f = append(f, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	key := []byte{0x37, 0xfa, 0x21, 0x3d}
	f = append(f, key...)
	for i, c := range p {
		f = append(f, c^key[i%4])
	}
	return f
}

func cat(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

type readStep struct {
	op   Opcode
	data string
}

func TestReadMessage(t *testing.T) {
	long := strings.Repeat("x", 70000)
	mid := strings.Repeat("y", 300)
	closeP := func(code StatusCode, reason string) []byte {
		return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
	}
	cases := []struct {
		name    string
		in      []byte
		limit   int
		want    []readStep
		errCode StatusCode // 0: the stream ends with io.EOF after want
		errIs   error
	}{
		{name: "text", in: clientFrame(true, OpText, []byte(`[{"a":1}]`)), want: []readStep{{OpText, `[{"a":1}]`}}},
		{name: "empty text", in: clientFrame(true, OpText, nil), want: []readStep{{OpText, ""}}},
		{name: "16-bit length", in: clientFrame(true, OpText, []byte(mid)), want: []readStep{{OpText, mid}}},
		{name: "64-bit length", in: clientFrame(true, OpText, []byte(long)), limit: 1 << 20, want: []readStep{{OpText, long}}},
		{name: "odd lengths unmask", in: cat(clientFrame(true, OpText, []byte("abcdefghijk")), clientFrame(true, OpText, []byte("abc"))),
			want: []readStep{{OpText, "abcdefghijk"}, {OpText, "abc"}}},
		{name: "fragments joined, ping between", in: cat(
			clientFrame(false, OpText, []byte("hel")), clientFrame(true, OpPing, []byte("p")),
			clientFrame(false, OpContinuation, []byte("lo ")), clientFrame(true, OpContinuation, []byte("world"))),
			want: []readStep{{OpPing, "p"}, {OpText, "hello world"}}},
		{name: "pong and close returned", in: cat(clientFrame(true, OpPong, nil), clientFrame(true, OpClose, closeP(1000, "bye"))),
			want: []readStep{{OpPong, ""}, {OpClose, "\x03\xe8bye"}}},
		{name: "empty close", in: clientFrame(true, OpClose, nil), want: []readStep{{OpClose, ""}}},
		{name: "unmasked", in: []byte{0x81, 0x01, 'x'}, errCode: StatusProtocolError},
		{name: "reserved bit", in: func() []byte { f := clientFrame(true, OpText, []byte("x")); f[0] |= 0x40; return f }(), errCode: StatusProtocolError},
		{name: "unknown data opcode", in: clientFrame(true, 0x3, []byte("x")), errCode: StatusProtocolError},
		{name: "unknown control opcode", in: clientFrame(true, 0xB, nil), errCode: StatusProtocolError},
		{name: "fragmented control", in: clientFrame(false, OpPing, nil), errCode: StatusProtocolError},
		{name: "oversized control", in: clientFrame(true, OpPing, bytes.Repeat([]byte("p"), 126)), errCode: StatusProtocolError},
		{name: "continuation first", in: clientFrame(true, OpContinuation, []byte("x")), errCode: StatusProtocolError},
		{name: "text inside fragments", in: cat(clientFrame(false, OpText, []byte("a")), clientFrame(true, OpText, []byte("b"))), errCode: StatusProtocolError},
		{name: "over the limit", in: clientFrame(true, OpText, []byte(mid)), limit: 100, errCode: StatusMessageTooBig},
		{name: "fragments over the limit", in: cat(clientFrame(false, OpText, []byte(mid[:60])), clientFrame(true, OpContinuation, []byte(mid[:60]))),
			limit: 100, errCode: StatusMessageTooBig},
		{name: "huge declared length", in: []byte{0x81, 0x80 | 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, errCode: StatusMessageTooBig},
		{name: "invalid UTF-8 text", in: clientFrame(true, OpText, []byte{'a', 0xff}), errCode: StatusInvalidPayload},
		{name: "invalid UTF-8 across fragments", in: cat(clientFrame(false, OpText, []byte{0xe2, 0x82}), clientFrame(true, OpContinuation, []byte{'x'})), errCode: StatusInvalidPayload},
		{name: "invalid UTF-8 fails before the message ends", in: clientFrame(false, OpText, []byte("ok\xed\xa0\x80")), errCode: StatusInvalidPayload},
		{name: "invalid lead byte at a fragment's end fails fast", in: clientFrame(false, OpText, []byte("ok\xff")), errCode: StatusInvalidPayload},
		{name: "a code point cut at a fragment's end waits", in: cat(clientFrame(false, OpText, []byte("a\xf0\x9f")), clientFrame(false, OpContinuation, []byte("\x98")),
			clientFrame(true, OpContinuation, []byte("\x80b"))), want: []readStep{{OpText, "a😀b"}}},
		{name: "a cut code point never completed", in: cat(clientFrame(false, OpText, []byte("a\xf0\x9f")), clientFrame(true, OpContinuation, nil)), errCode: StatusInvalidPayload},
		{name: "UTF-8 split across fragments", in: cat(clientFrame(false, OpText, []byte{0xe2, 0x82}), clientFrame(true, OpContinuation, []byte{0xac})),
			want: []readStep{{OpText, "€"}}},
		{name: "binary refused", in: clientFrame(true, OpBinary, []byte("{}")), errCode: StatusUnsupportedData},
		{name: "fragmented binary refused at its first frame", in: clientFrame(false, OpBinary, []byte("{")), errCode: StatusUnsupportedData},
		{name: "close with 1 byte", in: clientFrame(true, OpClose, []byte{3}), errCode: StatusProtocolError},
		{name: "close with reserved code", in: clientFrame(true, OpClose, closeP(1005, "")), errCode: StatusProtocolError},
		{name: "close with bad reason", in: clientFrame(true, OpClose, closeP(1000, "\xff")), errCode: StatusInvalidPayload},
		{name: "cut in the header", in: clientFrame(true, OpText, []byte(mid))[:3], errIs: io.ErrUnexpectedEOF},
		{name: "cut in the payload", in: clientFrame(true, OpText, []byte(mid))[:50], errIs: io.ErrUnexpectedEOF},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			limit := c.limit
			if limit == 0 {
				limit = 1 << 16
			}
			// One byte per Read: every boundary is a short read.
			r := NewReader(&oneByteReader{b: c.in}, limit)
			for i, w := range c.want {
				op, data, err := r.ReadMessage()
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if op != w.op || string(data) != w.data {
					t.Fatalf("message %d: got op %d %.40q, want op %d %.40q", i, op, data, w.op, w.data)
				}
			}
			_, _, err := r.ReadMessage()
			var ce *CloseError
			switch {
			case c.errCode != 0:
				if !errors.As(err, &ce) || ce.Code != c.errCode {
					t.Fatalf("want close error %d, got %v", c.errCode, err)
				}
			case c.errIs != nil:
				if !errors.Is(err, c.errIs) {
					t.Fatalf("want %v, got %v", c.errIs, err)
				}
			default:
				if err != io.EOF {
					t.Fatalf("want io.EOF at the end, got %v", err)
				}
			}
		})
	}
}

type oneByteReader struct{ b []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.b[0]
	r.b = r.b[1:]
	return 1, nil
}

func TestServerFrames(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 100000} {
		p := bytes.Repeat([]byte{'z'}, n)
		want := AppendFrame(nil, OpText, p)
		buf := append(ReserveHeader([]byte("junk")[:0]), p...)
		got := Frame(buf, OpText)
		if !bytes.Equal(got, want) {
			t.Fatalf("n=%d: Frame and AppendFrame differ", n)
		}
		if len(got) != headerLen(n)+n || got[0] != 0x81 {
			t.Fatalf("n=%d: frame of %d bytes, first byte %#x", n, len(got), got[0])
		}
		// A server frame read back (after masking it as a client would).
		masked := clientFrame(true, OpText, p)
		op, data, err := NewReader(bytes.NewReader(masked), 1<<20).ReadMessage()
		if err != nil || op != OpText || !bytes.Equal(data, p) {
			t.Fatalf("n=%d: read back op %d, %d bytes, err %v", n, op, len(data), err)
		}
	}
	f := CloseFrame(StatusPolicyViolation, strings.Repeat("é", 100))
	if len(f) > 2+maxControlPayload || f[0] != 0x88 || CloseCode(f[2:]) != StatusPolicyViolation {
		t.Fatalf("close frame % x", f[:4])
	}
	if err := checkClose(f[2:]); err != nil {
		t.Fatalf("cut reason not valid: %v", err)
	}
}

func FuzzReadMessage(f *testing.F) {
	f.Add(clientFrame(true, OpText, []byte(`[{"channel":"/a"}]`)))
	f.Add(cat(clientFrame(false, OpText, []byte("a")), clientFrame(true, OpContinuation, []byte("b"))))
	f.Add(clientFrame(true, OpClose, []byte{3, 232}))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in), 4096)
		for range 100 {
			_, data, err := r.ReadMessage()
			if err != nil {
				return
			}
			if len(data) > 4096 {
				t.Fatalf("message of %d bytes over the limit", len(data))
			}
		}
	})
}

// BenchmarkReadMessage reads one masked 1.4 KB text frame (a typical
// batch of ten Bayeux messages) from memory: header, unmasking, UTF-8.
func BenchmarkReadMessage(b *testing.B) {
	payload := []byte(strings.Repeat(`{"channel":"/chat/room/42","data":{"text":"hello there","seq":1234},"id":"17"},`, 18))
	f := clientFrame(true, OpText, payload)
	src := bytes.NewReader(f)
	var r Reader
	r.Init(src, 1<<20)
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(f)
		if _, p, err := r.ReadMessage(); err != nil || len(p) != len(payload) {
			b.Fatalf("read %d bytes: %v", len(p), err)
		}
	}
}

// BenchmarkFrame frames a 1.4 KB payload built after a reserved header.
func BenchmarkFrame(b *testing.B) {
	buf := append(ReserveHeader(nil), bytes.Repeat([]byte{'x'}, 1400)...)
	b.ReportAllocs()
	for b.Loop() {
		if f := Frame(buf, OpText); len(f) != 1404 {
			b.Fatal(len(f))
		}
	}
}
