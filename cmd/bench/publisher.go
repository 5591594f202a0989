package main

import (
	"context"
	"math"
	"strconv"
	"sync/atomic"
	"time"
)

// publishTimeout bounds one publish (its acknowledgement).
const publishTimeout = 10 * time.Second

// publisher is one publishing session. It keeps up to inflight publishes
// sent and not yet acknowledged: on a websocket each is its own frame
// (the server answers them in order on the same socket); on long-polling,
// where concurrent requests could be reordered, the window is one Bayeux
// batch (one POST carrying up to inflight publishes, one POST at a time).
type publisher struct {
	idx      int
	s        *session
	channels []int         // channels it publishes to, cycled
	interval time.Duration // 0: as fast as possible
	offset   time.Duration // with a rate: phase of its schedule (publishers spread evenly over one interval)
	count    int64         // with a rate: publications to send (its share of rate×(warmup+duration))
	lag      time.Duration // with a rate: how late the last publication was sent
	inflight int
	window   chan struct{}  // websocket: one token per unacknowledged publish
	acked    []atomic.Int64 // acknowledged publications, per index into channels

	published, errors, measured atomic.Int64
}

func newPublisher(idx int, cfg Config) *publisher {
	p := &publisher{idx: idx, inflight: max(1, cfg.Inflight)}
	for c := idx % cfg.Channels; c < cfg.Channels; c += cfg.Publishers {
		p.channels = append(p.channels, c)
	}
	if len(p.channels) == 0 { // more publishers than channels
		p.channels = []int{idx % cfg.Channels}
	}
	p.acked = make([]atomic.Int64, len(p.channels))
	if cfg.Rate > 0 {
		p.interval = time.Duration(float64(time.Second) * float64(cfg.Publishers) / cfg.Rate)
		// Publishers in phase would send their messages in bursts of P
		// at once; spread evenly, the total rate is steady.
		p.offset = p.interval * time.Duration(idx) / time.Duration(cfg.Publishers)
		total := int64(math.Round(cfg.Rate * (cfg.Warmup + cfg.Duration).Seconds()))
		p.count = total / int64(cfg.Publishers)
		if int64(idx) < total%int64(cfg.Publishers) {
			p.count++
		}
	}
	if cfg.Transport == "websocket" {
		p.window = make(chan struct{}, p.inflight)
	}
	return p
}

// pubID is the id of publish seq: seq×2, +1 if it was sent inside the
// measurement window.
func pubID(seq int64, measured bool) string {
	n := seq << 1
	if measured {
		n |= 1
	}
	return strconv.FormatInt(n, 10)
}

func parsePubID(raw []byte) (seq int64, measured, ok bool) {
	if len(raw) >= 2 && raw[0] == '"' {
		raw = raw[1 : len(raw)-1]
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n < 0 {
		return 0, false, false
	}
	return n >> 1, n&1 == 1, true
}

// onMsg accounts publish replies (on the session's reader goroutine for a
// websocket, on the publishing goroutine for long-polling).
func (p *publisher) onMsg(m *wireMsg) {
	if m.Successful < 0 || (len(m.Channel) > 5 && string(m.Channel[:6]) == "/meta/") {
		return
	}
	seq, measured, ok := parsePubID(m.ID)
	if !ok {
		return
	}
	if p.window != nil {
		select {
		case <-p.window:
		default:
		}
	}
	if m.Successful != 1 {
		p.errors.Add(1)
		return
	}
	p.published.Add(1)
	p.acked[seq%int64(len(p.channels))].Add(1)
	if measured {
		p.measured.Add(1)
	}
}

// run publishes. Without a rate it publishes until stopAt, keeping the
// window full. With a rate it publishes exactly p.count messages on a fixed
// schedule from start+offset (a late publisher catches up without pausing), but
// never past hardStop. Then it waits (at most publishTimeout) for the
// outstanding acknowledgements.
func (p *publisher) run(ctx context.Context, r *runner, start, stopAt, hardStop time.Time) {
	names := make([]string, len(p.channels))
	for i, c := range p.channels {
		names[i] = r.channelName(c)
	}
	lp := p.window == nil
	next := start.Add(p.offset)
	buf := make([]byte, 0, 256)
	pad := newPadder(r.cfg.PayloadBytes, uint64(p.idx))
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for seq := int64(0); ; {
		k := int64(1)
		if p.interval > 0 {
			if seq >= p.count || sleepUntil(ctx, next) != nil || !time.Now().Before(hardStop) {
				break
			}
			p.lag = max(0, time.Since(next))
			now := time.Now()
			if lp { // everything due, up to the window
				for k < int64(p.inflight) && seq+k < p.count && !next.Add(p.interval*time.Duration(k)).After(now) {
					k++
				}
			}
			next = next.Add(p.interval * time.Duration(k))
		} else {
			if !time.Now().Before(stopAt) || ctx.Err() != nil {
				break
			}
			if lp {
				k = int64(p.inflight)
			}
		}
		if !lp {
			timer.Reset(publishTimeout)
			select {
			case p.window <- struct{}{}:
			case <-timer.C:
				p.errors.Add(1) // the window never opened: acknowledgements stopped
				return
			case <-ctx.Done():
				return
			}
		}
		now := time.Now().UnixNano()
		ms := r.measure.Load()
		measured := ms != 0 && now >= ms
		buf = append(buf[:0], '[')
		for j := int64(0); j < k; j++ {
			if j > 0 {
				buf = append(buf, ',')
			}
			i := (seq + j) % int64(len(names))
			b := msgBuilder(buf).open(names[i], p.s.id, pubID(seq+j, measured))
			b = append(b, `,"data":`...)
			buf = appendPayload(b, p.idx, seq+j, now, pad.next())
			buf = append(buf, '}')
		}
		buf = append(buf, ']')
		sctx, cancel := context.WithTimeout(ctx, publishTimeout)
		err := p.s.send(sctx, buf)
		cancel()
		seq += k
		if err != nil {
			p.errors.Add(k)
			if !lp || p.s.err() != nil {
				return
			}
		}
	}
	if !lp {
		deadline := time.Now().Add(publishTimeout)
		for len(p.window) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		p.errors.Add(int64(len(p.window))) // never acknowledged
	}
}
