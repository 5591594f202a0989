package wsframe

import (
	"encoding/binary"
	"fmt"
	"io"
	"unicode/utf8"
)

// Opcode is a frame's opcode (RFC 6455 section 5.2).
type Opcode byte

// The opcodes of RFC 6455.
const (
	OpContinuation Opcode = 0x0
	OpText         Opcode = 0x1
	OpBinary       Opcode = 0x2
	OpClose        Opcode = 0x8
	OpPing         Opcode = 0x9
	OpPong         Opcode = 0xA
)

func (op Opcode) control() bool { return op&0x8 != 0 }

// StatusCode is a close frame's status code (RFC 6455 section 7.4).
type StatusCode uint16

// The status codes the broker sends.
const (
	StatusNormalClosure   StatusCode = 1000
	StatusGoingAway       StatusCode = 1001
	StatusProtocolError   StatusCode = 1002
	StatusUnsupportedData StatusCode = 1003 // a binary message: Bayeux is JSON text
	StatusInvalidPayload  StatusCode = 1007 // also: a message the broker cannot decode
	StatusPolicyViolation StatusCode = 1008
	StatusMessageTooBig   StatusCode = 1009
	StatusTryAgainLater   StatusCode = 1013 // a reply was lost on its way from the session's owner: reconnect and resend
	StatusNoStatus        StatusCode = 1005 // never sent: a close frame without a code
)

// CloseError is returned by Reader.ReadMessage for a protocol violation by
// the client: close the connection with Code and Reason.
type CloseError struct {
	Code   StatusCode
	Reason string
}

func (e *CloseError) Error() string { return fmt.Sprintf("websocket: %d %s", e.Code, e.Reason) }

func violation(reason string) error { return &CloseError{Code: StatusProtocolError, Reason: reason} }

// MaxHeaderLen is the longest header of a server (unmasked) frame.
const MaxHeaderLen = 10

// maxControlPayload is the largest payload of a control frame.
const maxControlPayload = 125

// Reader reads the frames a client sends. It is not safe for concurrent
// use; its state between calls is a fragmented message in progress.
type Reader struct {
	r       io.Reader
	limit   int
	hdr     [12]byte
	frag    []byte   // fragments of the message in progress, unmasked
	fragOp  Opcode   // OpText or OpBinary while a fragmented message is open
	fragZ   bool     // the message in progress is compressed
	checked int      // bytes of frag checked to be UTF-8 (text, not compressed)
	dfl     *Deflate // permessage-deflate negotiated (nil: RSV1 is an error)
}

// NewReader reads from r; limit bounds a data message's size in bytes
// (after joining fragments), at least 1.
func NewReader(r io.Reader, limit int) *Reader {
	return &Reader{r: r, limit: max(limit, 1)}
}

// Init is NewReader for a Reader embedded by value.
func (r *Reader) Init(src io.Reader, limit int) {
	*r = Reader{r: src, limit: max(limit, 1)}
}

// SetDeflate accepts compressed messages (RSV1 on a message's first
// frame, permessage-deflate without client context takeover),
// decompressed with d's pooled decompressors. The limit applies to the
// decompressed size; the compressed size may exceed it by 1/64.
func (r *Reader) SetDeflate(d *Deflate) { r.dfl = d }

// rsv1 is the first header bit after FIN: a compressed message.
const rsv1 = 0x40

// ReadMessage reads until it has a whole text message (fragments joined,
// decompressed if compressed, payload owned by the caller) or a control
// frame (OpPing, OpPong or OpClose with its payload, at most 125 bytes),
// which may arrive between the fragments of a data message.
//
// Errors: a *CloseError for a protocol violation (unmasked or malformed
// frame, unknown opcode, bad fragmentation, a message over the limit,
// text that is not UTF-8, an invalid close frame, corrupt compressed
// data) or a binary message (1003: Bayeux is JSON text, so one is refused
// at its first frame); io.EOF if the stream
// ended between frames; io.ErrUnexpectedEOF or the reader's error
// otherwise. After an error the Reader must not be used again.
func (r *Reader) ReadMessage() (Opcode, []byte, error) {
	for {
		h, err := r.readHeader()
		if err != nil {
			return 0, nil, err
		}
		fin, op, z, n, key := h.fin, h.op, h.z, h.n, h.key
		if op.control() {
			return r.readControl(h)
		}

		switch op {
		case OpContinuation:
			if r.fragOp == 0 {
				return 0, nil, violation("continuation without a message")
			}
			if z {
				return 0, nil, violation("RSV1 on a continuation frame")
			}
		case OpText, OpBinary:
			if r.fragOp != 0 {
				return 0, nil, violation("new message inside a fragmented one")
			}
			if op == OpBinary {
				return 0, nil, &CloseError{Code: StatusUnsupportedData, Reason: "binary messages are not accepted"}
			}
		default:
			return 0, nil, violation(fmt.Sprintf("unknown opcode %d", op))
		}
		if op != OpContinuation {
			r.fragZ = z
		}
		if n > uint64(r.wireLimit()-len(r.frag)) {
			return 0, nil, tooBig(r.limit)
		}
		if op != OpContinuation && fin { // the common case: one frame, read in place
			p := make([]byte, n, r.room(n))
			if _, err := io.ReadFull(r.r, p); err != nil {
				return 0, nil, unexpected(err)
			}
			maskBytes(key, p)
			return r.complete(op, p)
		}
		if op != OpContinuation {
			r.fragOp = op
		}
		start := len(r.frag)
		r.frag = append(r.frag, make([]byte, n)...)
		if _, err := io.ReadFull(r.r, r.frag[start:]); err != nil {
			return 0, nil, unexpected(err)
		}
		maskBytes(key, r.frag[start:])
		// Text is checked fragment by fragment, so that invalid UTF-8
		// fails the connection before the message ends ("fail fast").
		if r.fragOp == OpText && !r.fragZ && !r.checkUTF8(fin) {
			return 0, nil, notUTF8()
		}
		if !fin {
			continue
		}
		p, mop := r.frag, r.fragOp
		r.frag, r.fragOp, r.checked = nil, 0, 0
		if mop == OpText && !r.fragZ {
			return mop, p, nil // checked above
		}
		return r.complete(mop, p)
	}
}

// header is one frame's header.
type header struct {
	fin, z bool // FIN; RSV1 (compressed)
	op     Opcode
	n      uint64 // payload length
	key    uint32 // masking key
}

// readHeader reads and checks one frame header (reserved bits, masking).
func (r *Reader) readHeader() (header, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:2]); err != nil {
		return header{}, err
	}
	b0, b1 := r.hdr[0], r.hdr[1]
	h := header{fin: b0&0x80 != 0, z: b0&rsv1 != 0, op: Opcode(b0 & 0x0f)}
	if b0&0x30 != 0 || (h.z && r.dfl == nil) {
		return header{}, violation("reserved bits set")
	}
	if b1&0x80 == 0 {
		return header{}, violation("client frame not masked")
	}
	ext := 0
	switch b1 & 0x7f {
	case 126:
		ext = 2
	case 127:
		ext = 8
	}
	if _, err := io.ReadFull(r.r, r.hdr[:ext+4]); err != nil {
		return header{}, unexpected(err)
	}
	h.n = uint64(b1 & 0x7f)
	switch ext {
	case 2:
		h.n = uint64(binary.BigEndian.Uint16(r.hdr[:2]))
	case 8:
		h.n = binary.BigEndian.Uint64(r.hdr[:8])
	}
	h.key = binary.LittleEndian.Uint32(r.hdr[ext : ext+4])
	return h, nil
}

// readControl reads the payload of the control frame h.
func (r *Reader) readControl(h header) (Opcode, []byte, error) {
	if h.z {
		return 0, nil, violation("compressed control frame")
	}
	if !h.fin || h.n > maxControlPayload {
		return 0, nil, violation("fragmented or oversized control frame")
	}
	if h.op != OpClose && h.op != OpPing && h.op != OpPong {
		return 0, nil, violation(fmt.Sprintf("unknown opcode %d", h.op))
	}
	p := make([]byte, h.n)
	if _, err := io.ReadFull(r.r, p); err != nil {
		return 0, nil, unexpected(err)
	}
	maskBytes(h.key, p)
	if h.op == OpClose {
		if err := checkClose(p); err != nil {
			return 0, nil, err
		}
	}
	return h.op, p, nil
}

// checkUTF8 checks the fragments of a text message received since the
// last call, up to the last whole code point unless final: a code point
// may continue in the next fragment.
func (r *Reader) checkUTF8(final bool) bool {
	p := r.frag[r.checked:]
	end := len(p)
	if !final {
		for k := 1; k <= utf8.UTFMax-1 && k <= len(p); k++ {
			if b := p[len(p)-k]; b < utf8.RuneSelf || b >= 0xc0 { // not a continuation byte
				if !utf8.FullRune(p[len(p)-k:]) { // the start of a valid sequence, cut short
					end = len(p) - k
				}
				break
			}
		}
	}
	if !utf8.Valid(p[:end]) {
		return false
	}
	r.checked += end
	return true
}

func notUTF8() error {
	return &CloseError{Code: StatusInvalidPayload, Reason: "text message is not UTF-8"}
}

// wireLimit is the largest number of payload bytes a message may take on
// the wire: the limit, plus 1/64 for a compressed one (deflate's worst
// case on incompressible data is far below that).
func (r *Reader) wireLimit() int {
	if r.fragZ {
		return r.limit + r.limit>>6 + 64
	}
	return r.limit
}

// room is the capacity to allocate for a one-frame message of n bytes:
// a compressed one gets room for the tail inflate appends.
func (r *Reader) room(n uint64) int {
	if r.fragZ {
		return int(n) + len(deflateTail)
	}
	return int(n)
}

// complete ends a data message: decompressed if it was compressed, and
// checked to be UTF-8 if it is text.
func (r *Reader) complete(op Opcode, p []byte) (Opcode, []byte, error) {
	if r.fragZ {
		r.fragZ = false
		var err error
		if p, err = r.dfl.inflate(p, r.limit); err != nil {
			return 0, nil, err
		}
	}
	if op == OpText && !utf8.Valid(p) {
		return 0, nil, notUTF8()
	}
	return op, p, nil
}

// unexpected turns an EOF inside a frame into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// checkClose validates a received close frame's payload: empty, or a
// valid status code and a UTF-8 reason.
func checkClose(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	if len(p) == 1 {
		return violation("close frame with a 1-byte payload")
	}
	if c := StatusCode(binary.BigEndian.Uint16(p)); !validReceivedCode(c) {
		return violation(fmt.Sprintf("invalid close code %d", c))
	}
	if !utf8.Valid(p[2:]) {
		return &CloseError{Code: StatusInvalidPayload, Reason: "close reason is not UTF-8"}
	}
	return nil
}

// validReceivedCode reports whether a peer may send close code c.
func validReceivedCode(c StatusCode) bool {
	return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999)
}

// CloseCode returns the status code of a received close frame's payload
// (StatusNoStatus if it has none).
func CloseCode(p []byte) StatusCode {
	if len(p) < 2 {
		return StatusNoStatus
	}
	return StatusCode(binary.BigEndian.Uint16(p))
}

// maskBytes XORs p with the 4-byte masking key (read little-endian), from
// payload position 0, eight bytes at a time.
func maskBytes(key uint32, p []byte) {
	k8 := uint64(key) | uint64(key)<<32
	i := 0
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^k8)
	}
	for ; i < len(p); i++ {
		p[i] ^= byte(key >> (8 * (i & 3)))
	}
}

// headerLen is the header length of a server frame with n payload bytes.
func headerLen(n int) int {
	switch {
	case n <= 125:
		return 2
	case n <= 65535:
		return 4
	default:
		return 10
	}
}

// putHeader writes a final, unmasked frame header for op and n payload
// bytes at the start of dst (len(dst) >= headerLen(n)).
func putHeader(dst []byte, op Opcode, n int) {
	dst[0] = 0x80 | byte(op)
	switch {
	case n <= 125:
		dst[1] = byte(n)
	case n <= 65535:
		dst[1] = 126
		binary.BigEndian.PutUint16(dst[2:], uint16(n))
	default:
		dst[1] = 127
		binary.BigEndian.PutUint64(dst[2:], uint64(n))
	}
}

// ReserveHeader appends MaxHeaderLen bytes to dst, for a payload to be
// appended after them and framed in place by Frame.
func ReserveHeader(dst []byte) []byte {
	return append(dst, make([]byte, MaxHeaderLen)...)
}

// Frame turns buf (MaxHeaderLen reserved bytes, then a payload) into one
// final frame of op: it writes the header just before the payload and
// returns the frame, a suffix of buf.
func Frame(buf []byte, op Opcode) []byte {
	n := len(buf) - MaxHeaderLen
	h := headerLen(n)
	f := buf[MaxHeaderLen-h:]
	putHeader(f, op, n)
	return f
}

// AppendFrame appends one final, unmasked frame of op with payload p.
func AppendFrame(dst []byte, op Opcode, p []byte) []byte {
	h := headerLen(len(p))
	dst = append(dst, make([]byte, h)...)
	putHeader(dst[len(dst)-h:], op, len(p))
	return append(dst, p...)
}

// CloseFrame returns a close frame with code and reason (cut to the 123
// bytes a control frame has room for, at a UTF-8 boundary).
func CloseFrame(code StatusCode, reason string) []byte {
	if len(reason) > maxControlPayload-2 {
		reason = reason[:maxControlPayload-2]
		for len(reason) > 0 && !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	p := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code))
	return AppendFrame(make([]byte, 0, 4+len(reason)), OpClose, append(p, reason...))
}
