package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"
)

// payload is the data of every published message.
type payload struct {
	P int   `json:"p"` // publisher index
	S int64 `json:"s"` // per-publisher sequence, from 0
	T int64 `json:"t"` // send time, unix nanoseconds
}

// appendPayload encodes a payload as {"p":P,"s":S,"t":T}, or
// {"p":P,"s":S,"t":T,"x":"pad"} with a pad (plain text, no quote or
// backslash).
func appendPayload(b []byte, p int, s, t int64, pad string) []byte {
	b = append(b, `{"p":`...)
	b = strconv.AppendInt(b, int64(p), 10)
	b = append(b, `,"s":`...)
	b = strconv.AppendInt(b, s, 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, t, 10)
	if pad != "" {
		b = append(b, `,"x":"`...)
		b = append(b, pad...)
		b = append(b, '"')
	}
	return append(b, '}')
}

// padWords make chat-like padding text: compressible as real JSON
// traffic is, not as a run of one byte is.
var padWords = strings.Fields(`the a to and of in is you that it for on with this was are be have at not
	but what all were when we there can an your which their said if do will each about how up out them then
	she many some so these would other into has more her two like him see time could no make than first been
	its who now people my made over did down only way find use may water long little very after words called
	just where most know get through back much before go good new write our used me man too any day same
	right look think also around another came come work three word must because does part even place well
	such here take why things help put years different away again off went old number great tell men say
	small every found still between name should home big give air line set own under read last never us left`)

// padder makes the padding of one publisher's publications: n bytes of
// padWords drawn at random for each publication, so that publications
// batched in one frame do not compress against each other better than
// different messages would.
type padder struct {
	n   int
	rng *rand.Rand
	buf []byte
}

func newPadder(n int, seed uint64) *padder {
	return &padder{n: n, rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))}
}

// next returns the next padding (valid until the next call; "" if n is 0).
func (p *padder) next() string {
	if p.n <= 0 {
		return ""
	}
	b := p.buf[:0]
	for len(b) < p.n {
		if len(b) > 0 {
			b = append(b, ' ')
		}
		b = append(b, padWords[p.rng.IntN(len(padWords))]...)
	}
	p.buf = b
	return unsafe.String(unsafe.SliceData(b), p.n)
}

// parsePayload decodes a payload; the exact form appendPayload writes is
// read without encoding/json (the tool's CPU competes with the server's),
// anything else (a server may re-encode) goes through encoding/json.
func parsePayload(b []byte) (payload, bool) {
	var pl payload
	rest, ok := b, true
	var v int64
	if rest, v, ok = field(rest, `{"p":`); ok {
		pl.P = int(v)
		if rest, pl.S, ok = field(rest, `,"s":`); ok {
			if rest, pl.T, ok = field(rest, `,"t":`); ok && (len(rest) == 1 && rest[0] == '}' || plainPad(rest)) {
				return pl, true
			}
		}
	}
	pl = payload{P: -1}
	if err := json.Unmarshal(b, &pl); err != nil || pl.P < 0 {
		return pl, false
	}
	return pl, true
}

// plainPad reports whether b is `,"x":"text"}` with no quote or backslash
// in the text (as appendPayload writes it).
func plainPad(b []byte) bool {
	const open = `,"x":"`
	if len(b) < len(open)+2 || string(b[:len(open)]) != open || string(b[len(b)-2:]) != `"}` {
		return false
	}
	return bytes.IndexAny(b[len(open):len(b)-2], `"\`) < 0
}

func field(b []byte, prefix string) ([]byte, int64, bool) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return b, 0, false
	}
	b = b[len(prefix):]
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == 0 || i > 18 {
		return b, 0, false
	}
	v, err := strconv.ParseInt(string(b[:i]), 10, 64)
	return b[i:], v, err == nil
}

// pubTrack is what one subscriber knows about one publisher.
type pubTrack struct {
	seen   []uint64 // bitset of received sequences
	maxSeq int64    // highest sequence received, -1 for none
}

// subscriber is one subscribing session and its accounting. Its counters
// are written only by its session's goroutine and read after the session
// is closed (close waits for that goroutine).
type subscriber struct {
	channel int
	s       *session
	pubs    []pubTrack

	delivered, unique, dup, ooo, bad int64
	measured                         int64   // deliveries sent inside the measurement window
	samples                          []int64 // latency ns, preallocated, never grown
	dropped                          int64   // samples not kept (slice full)

	total        *atomic.Int64 // distinct deliveries over all subscribers
	measureStart *atomic.Int64 // unix ns; 0 while warming up
}

func newSubscriber(channel, publishers, maxSamples int, total, measureStart *atomic.Int64) *subscriber {
	s := &subscriber{
		channel:      channel,
		pubs:         make([]pubTrack, publishers),
		samples:      make([]int64, 0, maxSamples),
		total:        total,
		measureStart: measureStart,
	}
	for i := range s.pubs {
		s.pubs[i].maxSeq = -1
	}
	return s
}

// onMsg takes every message the session receives: replies are skipped,
// deliveries handled.
func (s *subscriber) onMsg(m *wireMsg) {
	if m.Successful >= 0 || len(m.Channel) == 0 || (len(m.Channel) > 5 && string(m.Channel[:6]) == "/meta/") {
		return
	}
	s.handle(m.Data)
}

// handle accounts one delivery's data.
func (s *subscriber) handle(data []byte) {
	now := time.Now().UnixNano()
	s.delivered++
	pl, ok := parsePayload(data)
	if !ok || pl.P < 0 || pl.P >= len(s.pubs) || pl.S < 0 {
		s.bad++
		return
	}
	pt := &s.pubs[pl.P]
	w := int(pl.S >> 6)
	if w >= len(pt.seen) {
		pt.seen = append(pt.seen, make([]uint64, w+1-len(pt.seen)+len(pt.seen)/2)...)
	}
	bit := uint64(1) << (pl.S & 63)
	if pt.seen[w]&bit != 0 {
		s.dup++
		return
	}
	pt.seen[w] |= bit
	s.unique++
	s.total.Add(1)
	if pl.S < pt.maxSeq {
		s.ooo++
	} else {
		pt.maxSeq = pl.S
	}
	if ms := s.measureStart.Load(); ms != 0 && pl.T >= ms {
		s.measured++
		if len(s.samples) < cap(s.samples) {
			s.samples = append(s.samples, now-pl.T)
		} else {
			s.dropped++
		}
	}
}
