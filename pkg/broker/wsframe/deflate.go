package wsframe

import (
	"bytes"
	"compress/flate"
	"fmt"
	"hash/maphash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// The permessage-deflate extension (RFC 7692), always without context
// takeover in both directions: every message is compressed and
// decompressed on its own, so that no compressor or decompressor (their
// windows are 32 KiB and more) is held by an idle connection. Both are
// pooled in a Deflate and taken only for the time of one message.

// DeflateResponse is the Sec-WebSocket-Extensions value of a server that
// accepted an offer of permessage-deflate (NegotiateDeflate).
const DeflateResponse = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

// deflateTail ends a received message's compressed bytes: the 00 00 ff ff
// a sender removes (RFC 7692 section 7.2.2), then an empty final stored
// block, so that the decompressor ends with io.EOF.
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// NegotiateDeflate reports whether the upgrade request's
// Sec-WebSocket-Extensions header offers permessage-deflate with
// parameters this server can accept; the server then answers with
// DeflateResponse. Offers are tried in the client's order. An offer is
// declined if it has an unknown, repeated or malformed parameter, or asks
// for a server window under 15 bits (compress/flate always uses 32 KiB).
func NegotiateDeflate(h http.Header) bool {
	for _, v := range h.Values("Sec-WebSocket-Extensions") {
		for offer := range strings.SplitSeq(v, ",") {
			if acceptableDeflate(offer) {
				return true
			}
		}
	}
	return false
}

// acceptableDeflate reports whether one extension offer ("name; p; p=v")
// is a permessage-deflate offer this server accepts.
func acceptableDeflate(offer string) bool {
	parts := strings.Split(offer, ";")
	if !strings.EqualFold(strings.TrimSpace(parts[0]), "permessage-deflate") {
		return false
	}
	seen := map[string]bool{}
	for _, p := range parts[1:] {
		name, value, hasValue := strings.Cut(strings.TrimSpace(p), "=")
		name = strings.ToLower(strings.TrimSpace(name))
		value = strings.Trim(strings.TrimSpace(value), `"`)
		if seen[name] {
			return false
		}
		seen[name] = true
		switch name {
		case "server_no_context_takeover", "client_no_context_takeover":
			if hasValue {
				return false
			}
		case "server_max_window_bits":
			if bits, ok := windowBits(value); !ok || bits != 15 {
				return false
			}
		case "client_max_window_bits":
			if _, ok := windowBits(value); hasValue && !ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// windowBits parses a window size parameter (8 to 15).
func windowBits(v string) (int, bool) {
	if v == "" || v[0] == '0' {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n >= 8 && n <= 15
}

// Thresholds of the write side.
const (
	// MinCompress is the smallest message worth compressing: below it the
	// deflate block overhead eats the gain.
	MinCompress = 128
	// sharedCacheBytes bounds the memory of a Deflate's shared-segment
	// cache (payloads and segments); sharedCacheEntries bounds its
	// entries; a payload over maxSharedPayload is not cached.
	sharedCacheBytes   = 4 << 20
	sharedCacheEntries = 1024
	maxSharedPayload   = 64 << 10
)

// Deflate compresses server messages and decompresses client ones for
// every connection that negotiated permessage-deflate: a pool of flate
// writers and readers, taken for one message at a time, and a small cache
// of compressed segments whose content many connections send (a
// publication fanned out), which are compressed once. It is safe for
// concurrent use.
//
// A message is compressed as a series of segments, each a deflate stream
// of its own ended by a sync flush (an empty stored block, 00 00 ff ff):
// their concatenation is one valid deflate stream, since no segment
// refers back into another, so a segment cached for one connection's
// message can be used in another's (RFC 7692 section 7.2.1; the receiver
// has no context to keep anyway).
type Deflate struct {
	level   int
	writers sync.Pool // *compressor
	readers sync.Pool // *decompressor
	seed    maphash.Seed

	mu    sync.Mutex
	cache map[uint64]*sharedSegment
	order []uint64 // cache keys, oldest first
	bytes int      // payload and segment bytes in cache
}

type sharedSegment struct {
	payload []byte // the uncompressed content (a copy)
	seg     []byte // compressed, ending with 00 00 ff ff
}

type compressor struct {
	w   *flate.Writer
	out sliceWriter
}

type decompressor struct {
	r  io.ReadCloser
	br bytes.Reader
}

// sliceWriter appends what is written to a byte slice.
type sliceWriter struct{ b []byte }

func (s *sliceWriter) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

// NewDeflate returns a Deflate compressing at flate.BestSpeed: JSON
// compresses about as well as at higher levels for a fraction of the CPU.
func NewDeflate() *Deflate {
	return &Deflate{level: flate.BestSpeed, seed: maphash.MakeSeed(), cache: map[uint64]*sharedSegment{}}
}

// appendSegment appends p compressed and sync-flushed to dst.
func (d *Deflate) appendSegment(dst, p []byte) []byte {
	c, _ := d.writers.Get().(*compressor)
	if c == nil {
		c = &compressor{}
		c.w, _ = flate.NewWriter(&c.out, d.level) // the level is valid
	}
	c.out.b = dst
	c.w.Reset(&c.out)
	_, _ = c.w.Write(p) // a sliceWriter never fails
	_ = c.w.Flush()
	dst = c.out.b
	c.out.b = nil
	d.writers.Put(c)
	return dst
}

// Message is one compressed message being built: bytes added with Own
// are compressed for this message, content added with Shared is
// compressed once for every message that has it. Build with
// Deflate.Message, then Own and Shared in order, then Frame.
type Message struct {
	d       *Deflate
	buf     []byte // MaxHeaderLen reserved bytes, then the segments so far
	pending []byte // Own bytes not yet compressed
	synced  bool   // buf ends with a sync flush's 00 00 ff ff
}

// maxStored is the longest run of own bytes sent as a stored (not
// compressed) block: a few brackets and commas gain nothing from a
// compressor, which costs microseconds to reset and flush.
const maxStored = 32

// Message starts a message; sizeHint is its uncompressed size, roughly.
func (d *Deflate) Message(sizeHint int) *Message {
	return &Message{d: d, buf: ReserveHeader(make([]byte, 0, MaxHeaderLen+sizeHint/2+64))}
}

// Own adds bytes of this message only.
func (m *Message) Own(p ...byte) { m.pending = append(m.pending, p...) }

// Shared adds content likely sent in many messages (a publication): its
// compressed segment is taken from, or added to, the Deflate's bounded
// cache. The caller may reuse p afterwards.
func (m *Message) Shared(p []byte) {
	if len(p) > maxSharedPayload {
		m.pending = append(m.pending, p...)
		return
	}
	m.flush()
	d := m.d
	key := maphash.Bytes(d.seed, p)
	d.mu.Lock()
	e := d.cache[key]
	d.mu.Unlock()
	if e == nil || !bytes.Equal(e.payload, p) {
		e = &sharedSegment{payload: bytes.Clone(p), seg: d.appendSegment(nil, p)}
		d.remember(key, e)
	}
	m.buf = append(m.buf, e.seg...)
	m.synced = true
}

// Cached reports whether content p has a compressed segment in the cache.
func (d *Deflate) Cached(p []byte) bool {
	key := maphash.Bytes(d.seed, p)
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.cache[key]
	return e != nil && bytes.Equal(e.payload, p)
}

func (m *Message) flush() {
	switch n := len(m.pending); {
	case n == 0:
		return
	case n <= maxStored: // a stored block: header byte, LEN, NLEN, the bytes
		m.buf = append(m.buf, 0x00, byte(n), byte(n>>8), ^byte(n), ^byte(n>>8))
		m.buf = append(m.buf, m.pending...)
		m.synced = false
	default:
		m.buf = m.d.appendSegment(m.buf, m.pending)
		m.synced = true
	}
	m.pending = m.pending[:0]
}

// Frame ends the message and returns it as one final compressed (RSV1)
// frame of op.
func (m *Message) Frame(op Opcode) []byte {
	m.flush()
	// RFC 7692 section 7.2.1: the trailing 00 00 ff ff is left out.
	// The 00 00 ff ff the receiver appends is the LEN and NLEN of an empty
	// stored block whose 3 header bits it expects last: a sync flush's
	// are there already; after a stored block of ours (or nothing), a
	// 0x00 byte starts that empty block.
	out := m.buf
	if m.synced {
		out = out[:len(out)-4]
	} else {
		out = append(out, 0x00)
	}
	f := Frame(out, op)
	f[0] |= rsv1
	return f
}

// remember adds a shared segment to the cache, evicting the oldest
// entries beyond its bounds.
func (d *Deflate) remember(key uint64, e *sharedSegment) {
	size := len(e.payload) + len(e.seg)
	d.mu.Lock()
	defer d.mu.Unlock()
	if old := d.cache[key]; old != nil {
		d.bytes -= len(old.payload) + len(old.seg)
	} else {
		d.order = append(d.order, key)
	}
	d.cache[key] = e
	d.bytes += size
	for len(d.order) > 0 && (d.bytes > sharedCacheBytes || len(d.order) > sharedCacheEntries) {
		k := d.order[0]
		d.order = d.order[1:]
		if old := d.cache[k]; old != nil {
			d.bytes -= len(old.payload) + len(old.seg)
			delete(d.cache, k)
		}
	}
	if len(d.order) == 0 {
		d.order = nil // let the backing array go
	}
}

// inflate decompresses a received message's bytes (p has room for
// deflateTail after it) into at most limit bytes: a longer result is a
// CloseError 1009, corrupt data a CloseError 1007.
func (d *Deflate) inflate(p []byte, limit int) ([]byte, error) {
	p = append(p, deflateTail...)
	z, _ := d.readers.Get().(*decompressor)
	if z == nil {
		z = &decompressor{}
		z.br.Reset(p)
		z.r = flate.NewReader(&z.br)
	} else {
		z.br.Reset(p)
		_ = z.r.(flate.Resetter).Reset(&z.br, nil)
	}
	defer func() {
		z.br.Reset(nil)
		d.readers.Put(z)
	}()
	out := make([]byte, 0, min(limit+1, max(3*len(p), 512)))
	for {
		if len(out) == cap(out) {
			out = append(out, 0)[:len(out)] // grow, then bound by limit+1
			out = out[:len(out):min(cap(out), limit+1)]
		}
		n, err := z.r.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if len(out) > limit {
			return nil, tooBig(limit)
		}
		switch {
		case err == io.EOF:
			return out, nil
		case err != nil:
			return nil, &CloseError{Code: StatusInvalidPayload, Reason: "invalid compressed data"}
		}
	}
}

func tooBig(limit int) error {
	return &CloseError{Code: StatusMessageTooBig, Reason: fmt.Sprintf("message over %d bytes", limit)}
}
