package wsframe

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
)

func TestNegotiateDeflate(t *testing.T) {
	cases := []struct {
		offer string
		want  bool
	}{
		{"", false},
		{"permessage-deflate", true},
		{"permessage-deflate; client_max_window_bits", true}, // Chromium, ws, Faye
		{"permessage-deflate; client_no_context_takeover; server_no_context_takeover", true},
		{"permessage-deflate; client_max_window_bits=10", true},
		{`permessage-deflate; client_max_window_bits="12"`, true},
		{"permessage-deflate; server_max_window_bits=15", true},
		{"permessage-deflate; server_max_window_bits=10", false}, // our window is 32 KiB
		{"permessage-deflate; server_max_window_bits=10, permessage-deflate", true},
		{"x-webkit-deflate-frame", false},
		{"foo, Permessage-Deflate ; Client_Max_Window_Bits", true},
		{"permessage-deflate; server_max_window_bits", false},       // needs a value
		{"permessage-deflate; client_max_window_bits=7", false},     // out of range
		{"permessage-deflate; client_max_window_bits=016", false},   // leading zero
		{"permessage-deflate; server_no_context_takeover=1", false}, // takes no value
		{"permessage-deflate; client_no_context_takeover; client_no_context_takeover", false},
		{"permessage-deflate; mystery", false},
	}
	for _, c := range cases {
		h := http.Header{}
		if c.offer != "" {
			h.Set("Sec-WebSocket-Extensions", c.offer)
		}
		if got := NegotiateDeflate(h); got != c.want {
			t.Errorf("%q: got %v, want %v", c.offer, got, c.want)
		}
	}
}

// compress is what a client sends for p: deflate without context
// takeover, the trailing 00 00 ff ff removed.
func compress(t testing.TB, p []byte) []byte {
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, flate.DefaultCompression)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(p)
	_ = w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

func withRSV1(f []byte) []byte { f[0] |= rsv1; return f }

func TestReadCompressed(t *testing.T) {
	msg := []byte(strings.Repeat(`{"channel":"/chat","data":"héllo"},`, 40))
	z := compress(t, msg)
	bomb := compress(t, bytes.Repeat([]byte{' '}, 1<<20))
	cases := []struct {
		name    string
		in      []byte
		noDfl   bool
		want    []readStep
		errCode StatusCode
	}{
		{name: "one frame", in: withRSV1(clientFrame(true, OpText, z)), want: []readStep{{OpText, string(msg)}}},
		{name: "fragmented, ping between", in: cat(withRSV1(clientFrame(false, OpText, z[:7])), clientFrame(true, OpPing, nil),
			clientFrame(false, OpContinuation, z[7:20]), clientFrame(true, OpContinuation, z[20:])),
			want: []readStep{{OpPing, ""}, {OpText, string(msg)}}},
		{name: "compressed then plain", in: cat(withRSV1(clientFrame(true, OpText, z)), clientFrame(true, OpText, []byte("[]"))),
			want: []readStep{{OpText, string(msg)}, {OpText, "[]"}}},
		{name: "empty compressed message", in: withRSV1(clientFrame(true, OpText, []byte{0x00})), want: []readStep{{OpText, ""}}},
		{name: "RSV1 not negotiated", in: withRSV1(clientFrame(true, OpText, z)), noDfl: true, errCode: StatusProtocolError},
		{name: "RSV1 on a continuation", in: cat(withRSV1(clientFrame(false, OpText, z[:7])), withRSV1(clientFrame(true, OpContinuation, z[7:]))),
			errCode: StatusProtocolError},
		{name: "RSV1 on a ping", in: withRSV1(clientFrame(true, OpPing, nil)), errCode: StatusProtocolError},
		{name: "RSV2", in: func() []byte { f := clientFrame(true, OpText, z); f[0] |= 0x20; return f }(), errCode: StatusProtocolError},
		{name: "deflate bomb", in: withRSV1(clientFrame(true, OpText, bomb)), errCode: StatusMessageTooBig},
		{name: "corrupt data", in: withRSV1(clientFrame(true, OpText, []byte{0xff, 0xff, 0xff})), errCode: StatusInvalidPayload},
		{name: "inflated text not UTF-8", in: withRSV1(clientFrame(true, OpText, compress(t, bytes.Repeat([]byte{0xff}, 200)))),
			errCode: StatusInvalidPayload},
		{name: "compressed binary", in: withRSV1(clientFrame(true, OpBinary, z)), errCode: StatusUnsupportedData},
	}
	d := NewDeflate()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := NewReader(&oneByteReader{b: c.in}, 64<<10)
			if !c.noDfl {
				r.SetDeflate(d)
			}
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
			case err != io.EOF:
				t.Fatalf("want io.EOF at the end, got %v", err)
			}
		})
	}
}

// readServerFrame decodes one server frame as a client would, inflating
// it if RSV1 is set.
func readServerFrame(t testing.TB, f []byte) (compressed bool, payload []byte) {
	t.Helper()
	hdr, n := 2, int(f[1]&0x7f)
	switch n {
	case 126:
		hdr, n = 4, int(binary.BigEndian.Uint16(f[2:]))
	case 127:
		hdr, n = 10, int(binary.BigEndian.Uint64(f[2:]))
	}
	if f[1]&0x80 != 0 || len(f) != hdr+n {
		t.Fatalf("server frame: masked or length %d != %d", len(f), hdr+n)
	}
	if f[0]&rsv1 == 0 {
		return false, f[hdr:]
	}
	out, err := io.ReadAll(flate.NewReader(io.MultiReader(bytes.NewReader(f[hdr:]), bytes.NewReader(deflateTail))))
	if err != nil {
		t.Fatalf("inflate server frame: %v", err)
	}
	return true, out
}

// build compresses parts into one message, the odd ones shared.
func build(d *Deflate, parts ...[]byte) []byte {
	m := d.Message(0)
	for i, p := range parts {
		if i%2 == 1 {
			m.Shared(p)
		} else {
			m.Own(p...)
		}
	}
	return m.Frame(OpText)
}

func TestDeflateMessage(t *testing.T) {
	d := NewDeflate()
	pub := []byte(strings.Repeat(`{"channel":"/quotes/ACME","data":{"bid":101.5,"ask":101.7}},`, 30) + `{}`)
	random := make([]byte, 4000)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	cases := []struct {
		name  string
		parts [][]byte
	}{
		{"empty", nil},
		{"own only", [][]byte{pub}},
		{"one shared", [][]byte{[]byte("["), pub, []byte("]")}},
		{"shared, own, shared", [][]byte{[]byte("["), pub, []byte(`,{"id":"7","successful":true},`), pub, []byte("]")}},
		{"incompressible shared", [][]byte{[]byte("["), random, []byte("]")}},
		{"large", [][]byte{bytes.Repeat(pub, 100), pub, bytes.Repeat(pub, 50)}},
		{"own stored, shared, own stored", [][]byte{[]byte(`[`), pub, []byte(`,`), pub, []byte(`]`)}},
		{"short own only (stored)", [][]byte{[]byte(`[{"a":1}]`)}},
		{"own at the stored limit", [][]byte{bytes.Repeat([]byte("s"), maxStored), pub, bytes.Repeat([]byte("t"), maxStored+1)}},
	}
	for _, c := range cases {
		f := build(d, c.parts...)
		comp, got := readServerFrame(t, f)
		want := bytes.Join(c.parts, nil)
		if !comp || !bytes.Equal(got, want) {
			t.Fatalf("%s: compressed %v, round trip equal %v", c.name, comp, bytes.Equal(got, want))
		}
		if f[0]&0x0f != byte(OpText) || f[0]&0x80 == 0 {
			t.Fatalf("%s: first byte %#x", c.name, f[0])
		}
	}
	// Shared content is compressed once, by whichever message comes first,
	// safely under concurrency; content of the same length is not confused.
	var wg sync.WaitGroup
	frames := make([][]byte, 16)
	for i := range frames {
		wg.Add(1)
		go func() {
			defer wg.Done()
			frames[i] = build(d, []byte("["), pub, []byte("]"))
		}()
	}
	wg.Wait()
	for _, f := range frames {
		if !bytes.Equal(f, frames[0]) {
			t.Fatal("messages with the same shared content differ")
		}
	}
	d.mu.Lock()
	e := d.cache[maphash.Bytes(d.seed, pub)]
	d.mu.Unlock()
	if e == nil || !bytes.Equal(e.payload, pub) {
		t.Fatal("shared content not cached")
	}
	other := bytes.ReplaceAll(pub, []byte("ACME"), []byte("ACMF"))
	if _, got := readServerFrame(t, build(d, nil, other)); !bytes.Equal(got, other) {
		t.Fatal("another payload got the cached segment")
	}
	// A JSON message compresses well.
	if f := build(d, []byte("["), pub, []byte("]")); len(f) > len(pub)/3 {
		t.Fatalf("%d bytes compressed to %d", len(pub), len(f))
	}
}

func TestDeflateCacheBounded(t *testing.T) {
	d := NewDeflate()
	for i := range 3 * sharedCacheEntries {
		p := []byte(strings.Repeat("abcdefgh", 20) + string(rune('a'+i%26)) + strings.Repeat("x", i))
		build(d, nil, p)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.cache) > sharedCacheEntries || d.bytes > sharedCacheBytes || len(d.order) != len(d.cache) {
		t.Fatalf("cache: %d entries, %d bytes, %d keys", len(d.cache), d.bytes, len(d.order))
	}
}

// BenchmarkDeflateMessage compresses a 1.4 KB JSON message: own (every
// byte compressed for this message) or shared (a cached publication
// between own brackets, as a fan-out sends it).
func BenchmarkDeflateMessage(b *testing.B) {
	payload := []byte(strings.Repeat(`{"channel":"/chat/room/42","data":{"text":"hello there","seq":1234},"id":"17"},`, 18))
	for _, shared := range []bool{false, true} {
		b.Run(map[bool]string{false: "own", true: "shared"}[shared], func(b *testing.B) {
			d := NewDeflate()
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				m := d.Message(len(payload))
				m.Own('[')
				if shared {
					m.Shared(payload)
				} else {
					m.Own(payload...)
				}
				m.Own(']')
				if f := m.Frame(OpText); len(f) >= len(payload) {
					b.Fatal("not compressed")
				}
			}
		})
	}
}

// BenchmarkReadCompressed reads and inflates one compressed 1.4 KB frame.
func BenchmarkReadCompressed(b *testing.B) {
	payload := []byte(strings.Repeat(`{"channel":"/chat/room/42","data":{"text":"hello there","seq":1234},"id":"17"},`, 18))
	f := withRSV1(clientFrame(true, OpText, compress(b, payload)))
	src := bytes.NewReader(f)
	var r Reader
	r.Init(src, 1<<20)
	r.SetDeflate(NewDeflate())
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(f)
		if _, p, err := r.ReadMessage(); err != nil || len(p) != len(payload) {
			b.Fatalf("read %d bytes: %v", len(p), err)
		}
	}
}
