package cluster

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

// The receive path of a pub/sub connection, two goroutines per reader:
//
//   - pump reads what go-redis parses off the connection (messages and
//     subscription confirmations) into a bounded queue, and handles the
//     connection's failures (back-off, reconnect, slot moves);
//   - consume takes everything ready in the queue at once, up to maxBatch,
//     decodes it and hands the publications to the broker as one batch
//     (engine.BatchHandler), so that each socket is woken, and written,
//     once per batch. It never waits for a batch to fill: a message alone
//     in the queue is delivered at once, as before batching.
//
// The queue keeps the connection's order; consume alone touches the
// channels' positions (tracked), so catch-up, gap filling and duplicate
// removal see messages in the order Redis sent them.
const (
	// receiveQueue bounds what pump has read ahead of consume. Full, pump
	// waits: the socket's buffer, then Redis's output buffer for this
	// connection fill; nothing is dropped here. Should Redis's pubsub
	// client-output-buffer-limit be passed, Redis closes the connection,
	// and the reader reconnects and catches up from history (a gap if
	// history no longer has it).
	receiveQueue = 512
	// maxBatch is the most messages consume hands over in one batch.
	maxBatch = 256
)

// Connection events pump queues between messages, so that consume sees
// them in the connection's order.
type connEvent int

const (
	connLost     connEvent = iota // the connection failed
	connRestored                  // it is back and holds no channel (nothing to catch up)
)

// receiveTimeout is how long pump waits before pinging Redis to check the
// pub/sub connection.
const receiveTimeout = 5 * time.Second

// errSlotMoved: Redis dropped a shard channel we hold.
var errSlotMoved = errors.New("redis: shard channel's slot moved")

// Run implements engine.Engine: it reads the pub/sub connections, two
// goroutines per partition, and delivers to h until ctx ends.
func (r *Redis) Run(ctx context.Context, h engine.Handler) error {
	for _, rd := range r.readers {
		rd.up.set(true)
	}
	// ReceiveTimeout does not return on ctx cancellation; closing the
	// pub/sub connections does.
	stop := context.AfterFunc(ctx, r.closeReaders)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { r.watchHealth(ctx) })
	for _, rd := range r.readers {
		pumped := make(chan struct{})
		wg.Go(func() { defer close(pumped); rd.pump(ctx) })
		wg.Go(func() { rd.consume(ctx, h, pumped) })
	}
	wg.Wait()
	return nil
}

// pump reads the connection into rd.q until ctx ends or the engine
// closes.
func (rd *reader) pump(ctx context.Context) {
	r := rd.e
	backoff := 50 * time.Millisecond
	fail := func(err error) bool {
		if !rd.failing {
			r.log.Warn("redis pub/sub connection lost", "partition", rd.part, "err", err)
			rd.failing = true
			rd.up.set(false)
			if !rd.send(ctx, connLost) {
				return false
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		// At most 1s between attempts: a restored Redis is noticed within
		// about a second (readiness detail), at one dial per second and
		// partition while it is down.
		backoff = min(backoff*2, time.Second)
		if r.cc != nil {
			rd.reset(ctx)
		}
		return rd.restoreIfIdle(ctx)
	}
	for {
		if ctx.Err() != nil || r.closed.Load() {
			return
		}
		ps := rd.current()
		if ps == nil {
			select {
			case <-ctx.Done():
				return
			case <-rd.kick:
			}
			continue
		}
		msg, err := ps.ReceiveTimeout(ctx, receiveTimeout)
		if err != nil {
			if ctx.Err() != nil || r.closed.Load() {
				return
			}
			if errors.Is(err, redis.ErrClosed) && rd.current() != ps {
				continue // replaced by reset
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Quiet connection: check it is alive.
				if perr := ps.Ping(ctx); perr == nil {
					continue
				}
			}
			if !fail(err) {
				return
			}
			continue
		}
		backoff = 50 * time.Millisecond
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "sunsubscribe" && rd.wants(m.Channel) {
				// Redis dropped a channel we hold: its slot moved to
				// another shard (resharding or failover). Reconnect.
				r.log.Info("redis shard channel moved; resubscribing", "partition", rd.part, "channel", m.Channel)
				if !fail(errSlotMoved) {
					return
				}
				continue
			}
			if m.Kind == "subscribe" || m.Kind == "ssubscribe" {
				rd.failing = false // resubscribed: consume restores and catches up
			}
			if !rd.send(ctx, m) {
				return
			}
		case *redis.Message:
			if !rd.send(ctx, m) {
				return
			}
		}
	}
}

// send queues v for consume, waiting while the queue is full.
func (rd *reader) send(ctx context.Context, v any) bool {
	select {
	case rd.q <- v:
		return true
	case <-ctx.Done():
		return false
	}
}

// consume delivers what pump queues, in batches of what is ready, until
// ctx ends or pump has ended (pumped is closed).
func (rd *reader) consume(ctx context.Context, h engine.Handler, pumped <-chan struct{}) {
	q := rd.q
	sweep := time.NewTicker(rd.e.cfg.Retention.MaxTTL() / 2)
	defer sweep.Stop()
	out := newBatchOut(h, rd.e.cfg.Tracer != nil)
	items := make([]any, 0, maxBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-pumped:
			return
		case now := <-sweep.C:
			rd.sweepTracked(now)
			continue
		case v := <-q:
			items = append(items[:0], v)
		}
	more:
		for len(items) < maxBatch {
			select {
			case v := <-q:
				items = append(items, v)
			default:
				break more
			}
		}
		rd.deliver(ctx, out, items)
		clear(items)
	}
}

// deliver decodes items (what the connection sent, in order) and hands
// their publications to the broker as one batch.
func (rd *reader) deliver(ctx context.Context, out *batchOut, items []any) {
	now := time.Now() // when the batch's channels were last seen (sweepTracked)
	for _, v := range items {
		switch m := v.(type) {
		case *redis.Message:
			rd.onMessage(ctx, out, m.Payload, now)
		case *redis.Subscription:
			out.flush()
			rd.onSubscription(ctx, out, m)
		case connEvent:
			out.flush()
			rd.onConnEvent(m)
		}
	}
	out.flush()
}

// onConnEvent (consume) follows the connection's state.
func (rd *reader) onConnEvent(ev connEvent) {
	switch ev {
	case connLost:
		rd.lost = true
		rd.up.set(false) // again: a restore queued before the loss may have set it
	case connRestored:
		if rd.lost {
			rd.lost = false
			rd.up.set(true)
			rd.e.log.Info("redis pub/sub connection restored", "partition", rd.part)
		}
	}
}

// onSubscription handles a (un)subscribe confirmation: a subscribe waited
// for is released (and starts its tracking), a connection found lost is
// restored and caught up from history.
func (rd *reader) onSubscription(ctx context.Context, h engine.Handler, m *redis.Subscription) {
	r := rd.e
	switch m.Kind {
	case "subscribe", "ssubscribe":
		rd.mu.Lock()
		p := rd.pending[m.Channel]
		delete(rd.pending, m.Channel)
		rd.mu.Unlock()
		if p != nil {
			if p.concrete && rd.tracked[p.channel] == nil {
				rd.tracked[p.channel] = &tracked{name: p.channel, epoch: p.epoch, offset: p.offset, seen: time.Now()}
			}
			close(p.done)
		}
		if rd.lost {
			rd.lost = false
			rd.up.set(true)
			r.log.Info("redis pub/sub connection restored; catching up from history", "partition", rd.part)
			rd.catchUp(ctx, h)
		}
	case "unsubscribe", "sunsubscribe":
		rd.untrackUncovered()
	}
}

// onMessage parses an envelope "epoch offset ms [traceparent ]channel\npayload"
// (a traceparent only from a node that traces; a channel starts with "/")
// and delivers it once, in order, filling a gap from history if needed.
func (rd *reader) onMessage(ctx context.Context, out *batchOut, env string, now time.Time) {
	r := rd.e
	head, payload, ok := cutString(env, '\n')
	if !ok {
		r.log.Warn("redis: malformed envelope")
		return
	}
	epoch, rest, ok1 := cutString(head, ' ')
	offs, rest, ok2 := cutString(rest, ' ')
	ms, name, ok3 := cutString(rest, ' ')
	var traceparent string
	if ok3 && !strings.HasPrefix(name, "/") {
		traceparent, name, ok3 = cutString(name, ' ')
	}
	off, err := strconv.ParseUint(offs, 10, 64)
	at, err2 := strconv.ParseInt(ms, 10, 64)
	if !ok1 || !ok2 || !ok3 || err != nil || err2 != nil {
		r.log.Warn("redis: malformed envelope head", "head", head)
		return
	}
	t := rd.tracked[name]
	if t != nil && t.epoch == "" {
		// Subscribed before the channel existed: its first epoch is ours.
		t.epoch = strings.Clone(epoch)
	}
	switch {
	case t == nil:
		// Seen first through a wildcard pattern: start here.
		t = &tracked{name: strings.Clone(name), epoch: strings.Clone(epoch), offset: off, at: at, seen: now}
		rd.tracked[t.name] = t
	case t.epoch != epoch:
		// The channel's history was reset (Redis lost it): whatever came
		// between cannot be recovered.
		out.OnGap(name, engine.Position{Epoch: t.epoch, Offset: t.offset}, engine.Position{Epoch: epoch, Offset: off - 1})
		t.epoch, t.offset, t.at, t.seen = strings.Clone(epoch), off, at, now
	case off <= t.offset:
		return // already delivered (another of our Redis channels, or caught up)
	case off > t.offset+1:
		rd.fill(ctx, newPatience(), out, name, t, off-1)
		t.offset, t.at, t.seen = off, at, now
	default:
		t.offset, t.at, t.seen = off, at, now
	}
	p := out.arena.publication(payload)
	p.Channel, p.Epoch, p.Offset, p.Time = t.name, t.epoch, off, at
	if out.tracing {
		out.spans = append(out.spans, r.cfg.Tracer.Fanout(traceparent, name, off))
	}
	out.OnPublication(p)
}

// batchOut collects the publications of one batch in delivery order and
// hands them to the broker at flush. It is an engine.Handler itself, so
// that gap filling and catch-up (fill, catchUp) add to the batch too; a
// gap flushes what comes before it first.
type batchOut struct {
	h       engine.Handler
	bh      engine.BatchHandler // h, when it takes batches
	pubs    []*engine.Publication
	arena   arena
	tracing bool
	spans   []trace.Span // fan-out spans of the batch (tracing on), ended at flush
}

func newBatchOut(h engine.Handler, tracing bool) *batchOut {
	bh, _ := h.(engine.BatchHandler)
	return &batchOut{h: h, bh: bh, tracing: tracing}
}

func (o *batchOut) OnPublication(p *engine.Publication) { o.pubs = append(o.pubs, p) }

func (o *batchOut) OnGap(ch string, from, to engine.Position) {
	o.flush()
	o.h.OnGap(ch, from, to)
}

// flush delivers the batch: in one call to a BatchHandler, else one by one.
func (o *batchOut) flush() {
	switch {
	case len(o.pubs) == 0:
	case o.bh != nil:
		o.bh.OnPublications(o.pubs)
	default:
		for _, p := range o.pubs {
			o.h.OnPublication(p)
		}
	}
	clear(o.pubs)
	o.pubs = o.pubs[:0]
	for _, s := range o.spans {
		s.End()
	}
	clear(o.spans)
	o.spans = o.spans[:0]
}

// arena hands out the Publications of received messages, and copies of
// their payloads, from blocks shared by consecutive messages: one
// allocation per block instead of two per message. A publication queued
// for a subscriber keeps its whole block reachable, so blocks are small:
// what a slow subscriber's queue holds on to is at most one block per
// queued message (arenaPubs Publications and arenaBytes of payload), not
// the batch's.
type arena struct {
	pubs []engine.Publication
	buf  []byte
}

const (
	arenaPubs  = 128
	arenaBytes = 16 << 10
)

// publication returns a new Publication whose Payload is a copy of
// payload.
func (a *arena) publication(payload string) *engine.Publication {
	if len(a.pubs) == 0 || (len(payload) <= arenaBytes && cap(a.buf)-len(a.buf) < len(payload)) {
		// A new block: Publications and bytes together, so that a
		// block's Publications point only into its own bytes.
		a.pubs = make([]engine.Publication, arenaPubs)
		a.buf = make([]byte, 0, arenaBytes)
	}
	p := &a.pubs[0]
	a.pubs = a.pubs[1:]
	if len(payload) > arenaBytes {
		p.Payload = []byte(payload) // a large payload has its own
		return p
	}
	n := len(a.buf)
	a.buf = append(a.buf, payload...)
	p.Payload = a.buf[n:len(a.buf):len(a.buf)]
	return p
}
