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
	// minCompress is the smallest payload worth compressing: below it the
	// deflate block overhead eats the gain.
	minCompress = 128
	// sharedCacheBytes bounds the memory of a Deflate's shared-frame
	// cache (payloads and frames); sharedCacheEntries bounds its entries;
	// a payload over maxSharedPayload is not cached.
	sharedCacheBytes   = 4 << 20
	sharedCacheEntries = 1024
	maxSharedPayload   = 64 << 10
)

// Deflate compresses server messages and decompresses client ones for
// every connection that negotiated permessage-deflate: a pool of flate
// writers and readers, taken for one message at a time, and a small cache
// of frames whose content is shared by many connections (a publication
// fanned out), which are compressed once. It is safe for concurrent use.
type Deflate struct {
	level   int
	writers sync.Pool // *compressor
	readers sync.Pool // *decompressor
	seed    maphash.Seed

	mu    sync.Mutex
	cache map[uint64]*sharedFrame
	order []uint64 // cache keys, oldest first
	bytes int      // payload and frame bytes in cache
}

type sharedFrame struct {
	payload []byte // the uncompressed content (never modified)
	frame   []byte // the frame sent for it
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
// compresses about as well as at higher levels for a fraction of the CPU
// (docs/benchmarks.md).
func NewDeflate() *Deflate {
	return &Deflate{level: flate.BestSpeed, seed: maphash.MakeSeed(), cache: map[uint64]*sharedFrame{}}
}

// Frame turns buf (MaxHeaderLen reserved bytes, then a payload, as for
// the package-level Frame) into one final frame of op, compressed (RSV1
// set) when that makes it smaller. The result may be buf itself framed in
// place, or a new buffer.
//
// shared says the same payload is likely framed for many connections
// (one publication pushed to each subscriber): its frame is then looked
// up in, and kept in, a bounded cache, so that it is compressed once.
// The caller must not modify buf afterwards, nor the returned frame.
func (d *Deflate) Frame(buf []byte, op Opcode, shared bool) []byte {
	payload := buf[MaxHeaderLen:]
	if len(payload) < minCompress {
		return Frame(buf, op)
	}
	if !shared || len(payload) > maxSharedPayload {
		return d.frame(buf, op)
	}
	key := maphash.Bytes(d.seed, payload)
	d.mu.Lock()
	if e := d.cache[key]; e != nil && bytes.Equal(e.payload, payload) {
		d.mu.Unlock()
		return e.frame
	}
	d.mu.Unlock()
	f := d.frame(buf, op)
	d.remember(key, &sharedFrame{payload: payload, frame: f})
	return f
}

// frame compresses buf's payload into a new frame, or frames buf in place
// if compression does not make it smaller.
func (d *Deflate) frame(buf []byte, op Opcode) []byte {
	payload := buf[MaxHeaderLen:]
	c, _ := d.writers.Get().(*compressor)
	if c == nil {
		c = &compressor{}
		c.w, _ = flate.NewWriter(&c.out, d.level) // the level is valid
	}
	c.out.b = ReserveHeader(make([]byte, 0, MaxHeaderLen+len(payload)/2+64))
	c.w.Reset(&c.out)
	_, _ = c.w.Write(payload) // a sliceWriter never fails
	_ = c.w.Flush()
	out := c.out.b
	c.out.b = nil
	d.writers.Put(c)
	// Flush ends with an empty stored block, 00 00 ff ff, which the
	// receiver adds back (RFC 7692 section 7.2.1).
	out = out[:len(out)-4]
	if len(out)-MaxHeaderLen >= len(payload) {
		return Frame(buf, op)
	}
	f := Frame(out, op)
	f[0] |= rsv1
	return f
}

// remember adds a shared frame to the cache, evicting the oldest entries
// beyond its bounds.
func (d *Deflate) remember(key uint64, e *sharedFrame) {
	size := len(e.payload) + len(e.frame)
	d.mu.Lock()
	defer d.mu.Unlock()
	if old := d.cache[key]; old != nil {
		d.bytes -= len(old.payload) + len(old.frame)
	} else {
		d.order = append(d.order, key)
	}
	d.cache[key] = e
	d.bytes += size
	for len(d.order) > 0 && (d.bytes > sharedCacheBytes || len(d.order) > sharedCacheEntries) {
		k := d.order[0]
		d.order = d.order[1:]
		if old := d.cache[k]; old != nil {
			d.bytes -= len(old.payload) + len(old.frame)
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
