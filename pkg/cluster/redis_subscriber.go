package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

// receiveTimeout is how long the reader waits before pinging Redis to check
// the pub/sub connection.
const receiveTimeout = 5 * time.Second

// reader owns one partition's pub/sub connection (the only one on a single
// instance) and the offset tracking of the partition's channels.
//
// Concurrency: subscribe and unsubscribe are called from any goroutine and
// take mu; the tracking state (tracked, lost) belongs to the reader's own
// goroutine (run). In cluster mode only run replaces ps (reset), after
// its slot moved or its connection failed.
type reader struct {
	e    *Redis
	part int
	kick chan struct{} // cap 1: ps was created

	mu      sync.Mutex
	ps      *redis.PubSub          // nil in cluster mode until the first subscription
	want    map[string]bool        // Redis channels held, for resubscription
	pending map[string]*pendingSub // Redis channel -> waiting for confirmation

	// Reader-goroutine state.
	tracked map[string]*tracked
	lost    bool // the connection failed; catch up on resubscribe

	up chanFlag // connection believed healthy
}

func newReader(e *Redis, part int) *reader {
	return &reader{
		e: e, part: part, kick: make(chan struct{}, 1),
		want: map[string]bool{}, pending: map[string]*pendingSub{}, tracked: map[string]*tracked{},
	}
}

// subscribe sends the subscription of Redis channel ch; p.done is closed
// when Redis confirms it.
func (rd *reader) subscribe(ctx context.Context, ch string, p *pendingSub) error {
	rd.mu.Lock()
	rd.pending[ch] = p
	rd.want[ch] = true
	ps := rd.ps
	if ps == nil {
		// Cluster mode, first channel: the connection goes to the owner of
		// the channel's slot.
		rd.ps = rd.e.cc.SSubscribe(ctx, ch)
		rd.mu.Unlock()
		signal(rd.kick)
		return nil
	}
	rd.mu.Unlock()
	err := rd.e.sub(ctx, ps, ch)
	if err != nil && rd.current() != ps {
		return nil // replaced meanwhile; the new connection subscribed ch
	}
	return err
}

func (rd *reader) unsubscribe(ctx context.Context, ch string) error {
	rd.mu.Lock()
	delete(rd.want, ch)
	delete(rd.pending, ch)
	ps := rd.ps
	rd.mu.Unlock()
	if ps == nil {
		return nil
	}
	if rd.e.cc != nil {
		return ps.SUnsubscribe(ctx, ch)
	}
	return ps.Unsubscribe(ctx, ch)
}

func (rd *reader) unsubscribeQuietly(ch string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = rd.unsubscribe(ctx, ch)
}

// restoreIfIdle (reader goroutine) marks a lost connection that holds no
// channel as restored as soon as Redis answers: no subscription
// confirmation will come to say so, and nothing needs catching up.
func (rd *reader) restoreIfIdle(ctx context.Context) {
	rd.mu.Lock()
	idle, ps := len(rd.want) == 0, rd.ps
	rd.mu.Unlock()
	if !rd.lost || !idle {
		return
	}
	if ps != nil {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := ps.Ping(pctx)
		cancel()
		if err != nil {
			return
		}
	}
	rd.lost = false
	rd.up.set(true)
	rd.e.log.Info("redis pub/sub connection restored", "partition", rd.part)
}

func (rd *reader) current() *redis.PubSub {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	return rd.ps
}

func (rd *reader) wants(ch string) bool {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	return rd.want[ch]
}

// sub subscribes ps to ch: SSUBSCRIBE on a cluster, SUBSCRIBE otherwise.
func (r *Redis) sub(ctx context.Context, ps *redis.PubSub, ch string) error {
	if r.cc != nil {
		return ps.SSubscribe(ctx, ch)
	}
	return ps.Subscribe(ctx, ch)
}

// reset (cluster mode, reader goroutine) replaces the connection by a new
// one to the current owner of the partition's slot, subscribed to every
// channel held. The cluster topology is reloaded in the background; until
// it is, the new connection may still reach the old owner, and fail again.
func (rd *reader) reset(ctx context.Context) {
	rd.e.cc.ReloadState(ctx)
	rd.mu.Lock()
	old := rd.ps
	rd.ps = nil
	if len(rd.want) > 0 && !rd.e.closed.Load() {
		chans := make([]string, 0, len(rd.want))
		for ch := range rd.want {
			chans = append(chans, ch)
		}
		rd.ps = rd.e.cc.SSubscribe(ctx, chans...)
	}
	rd.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
}

// closeReaders closes every reader's connection (which ends its run).
func (r *Redis) closeReaders() {
	for _, rd := range r.readers {
		rd.mu.Lock()
		ps := rd.ps
		rd.mu.Unlock()
		if ps != nil {
			_ = ps.Close()
		}
		signal(rd.kick)
	}
}

// Run implements engine.Engine: it reads the pub/sub connections, one
// goroutine per partition, and delivers to h until ctx ends.
func (r *Redis) Run(ctx context.Context, h engine.Handler) error {
	for _, rd := range r.readers {
		rd.up.set(true)
	}
	// ReceiveTimeout does not return on ctx cancellation; closing the
	// pub/sub connections does.
	stop := context.AfterFunc(ctx, r.closeReaders)
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.watchHealth(ctx)
	}()
	for _, rd := range r.readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rd.run(ctx, h)
		}()
	}
	wg.Wait()
	return nil
}

func (rd *reader) run(ctx context.Context, h engine.Handler) {
	r := rd.e
	sweep := time.NewTicker(r.cfg.Retention.MaxTTL() / 2)
	defer sweep.Stop()
	backoff := 50 * time.Millisecond
	fail := func(err error) bool {
		if !rd.lost {
			r.log.Warn("redis pub/sub connection lost", "partition", rd.part, "err", err)
		}
		rd.lost = true
		rd.up.set(false)
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
		rd.restoreIfIdle(ctx)
		return true
	}
	for {
		if ctx.Err() != nil || r.closed.Load() {
			return
		}
		select {
		case now := <-sweep.C:
			rd.sweepTracked(now)
		default:
		}
		ps := rd.current()
		if ps == nil {
			select {
			case <-ctx.Done():
				return
			case <-rd.kick:
			case now := <-sweep.C:
				rd.sweepTracked(now)
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
			if err := rd.onSubscription(ctx, h, m); err != nil {
				if !fail(err) {
					return
				}
				continue
			}
		case *redis.Message:
			rd.onMessage(ctx, h, m.Payload)
		case *redis.Pong:
		}
	}
}

// onSubscription handles a (un)subscribe confirmation: a subscribe waited
// for is released (and starts its tracking), a connection found lost is
// restored and caught up from history; a shard channel Redis dropped while
// we hold it (its slot moved) is an error, the caller reconnects.
func (rd *reader) onSubscription(ctx context.Context, h engine.Handler, m *redis.Subscription) error {
	r := rd.e
	switch m.Kind {
	case "subscribe", "ssubscribe":
		rd.mu.Lock()
		p := rd.pending[m.Channel]
		delete(rd.pending, m.Channel)
		rd.mu.Unlock()
		if p != nil {
			if p.concrete && rd.tracked[p.channel] == nil {
				rd.tracked[p.channel] = &tracked{epoch: p.epoch, offset: p.offset, seen: time.Now()}
			}
			close(p.done)
		}
		if rd.lost {
			rd.lost = false
			rd.up.set(true)
			r.log.Info("redis pub/sub connection restored; catching up from history", "partition", rd.part)
			rd.catchUp(ctx, h)
		}
	case "sunsubscribe":
		if rd.wants(m.Channel) {
			// Redis dropped a channel we hold: its slot moved to another
			// shard (resharding or failover).
			r.log.Info("redis shard channel moved; resubscribing", "partition", rd.part, "channel", m.Channel)
			return errors.New("slot moved")
		}
		rd.untrackUncovered()
	case "unsubscribe":
		rd.untrackUncovered()
	}
	return nil
}

// onMessage parses an envelope "epoch offset ms [traceparent ]channel\npayload"
// (a traceparent only from a node that traces; a channel starts with "/")
// and delivers it once, in order, filling a gap from history if needed.
func (rd *reader) onMessage(ctx context.Context, h engine.Handler, env string) {
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
	p := &engine.Publication{Channel: name, Epoch: epoch, Offset: off, Payload: []byte(payload), Time: at}
	t := rd.tracked[name]
	now := time.Now()
	if t != nil && t.epoch == "" {
		// Subscribed before the channel existed: its first epoch is ours.
		t.epoch = epoch
	}
	switch {
	case t == nil:
		// Seen first through a wildcard pattern: start here.
		rd.tracked[name] = &tracked{epoch: epoch, offset: off, at: at, seen: now}
	case t.epoch != epoch:
		// The channel's history was reset (Redis lost it): whatever came
		// between cannot be recovered.
		h.OnGap(name, engine.Position{Epoch: t.epoch, Offset: t.offset}, engine.Position{Epoch: epoch, Offset: off - 1})
		t.epoch, t.offset, t.at, t.seen = epoch, off, at, now
	case off <= t.offset:
		return // already delivered (another of our Redis channels, or caught up)
	case off > t.offset+1:
		rd.fill(ctx, h, name, t, off-1)
		t.offset, t.at, t.seen = off, at, now
	default:
		t.offset, t.at, t.seen = off, at, now
	}
	span := r.cfg.Tracer.Fanout(traceparent, name, off)
	h.OnPublication(p)
	span.End()
}

// fill delivers publications (t.offset, upTo] of channel from history, or
// reports them as a gap. upTo == 0 means "everything history has" (catch-up
// after a reconnect), where only a hole, not the end, is a gap.
func (rd *reader) fill(ctx context.Context, h engine.Handler, name string, t *tracked, upTo uint64) {
	r := rd.e
	bounded := upTo != 0
	if bounded && upTo <= t.offset {
		return
	}
	limit := 0
	if bounded {
		limit = int(upTo - t.offset)
	}
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	pubs, err := r.History(hctx, name, engine.Position{Epoch: t.epoch, Offset: t.offset}, limit)
	if !bounded && errors.Is(err, engine.ErrPositionGone) {
		h.OnGap(name, engine.Position{Epoch: t.epoch, Offset: t.offset}, engine.Position{})
		delete(rd.tracked, name)
		return
	}
	if !bounded && err != nil {
		r.log.Warn("redis: catch-up failed", "channel", name, "err", err)
		h.OnGap(name, engine.Position{Epoch: t.epoch, Offset: t.offset}, engine.Position{})
		delete(rd.tracked, name)
		return
	}
	if err != nil {
		r.log.Warn("redis: gap not recoverable from history", "channel", name, "from", t.offset, "to", upTo, "err", err)
		h.OnGap(name, engine.Position{Epoch: t.epoch, Offset: t.offset}, engine.Position{Epoch: t.epoch, Offset: upTo})
		t.offset, t.at = upTo, 0
		return
	}
	for i := range pubs {
		if bounded && pubs[i].Offset > upTo {
			break
		}
		if t.epoch == "" {
			t.epoch = pubs[i].Epoch
		}
		if pubs[i].Offset <= t.offset {
			continue
		}
		if pubs[i].Offset != t.offset+1 {
			h.OnGap(name, engine.Position{Epoch: t.epoch, Offset: t.offset}, engine.Position{Epoch: t.epoch, Offset: pubs[i].Offset - 1})
		}
		h.OnPublication(&pubs[i])
		t.offset, t.at = pubs[i].Offset, pubs[i].Time
	}
	if bounded && t.offset < upTo {
		h.OnGap(name, engine.Position{Epoch: t.epoch, Offset: t.offset}, engine.Position{Epoch: t.epoch, Offset: upTo})
		t.offset, t.at = upTo, 0
	}
}

// catchUp runs after the pub/sub connection came back: every tracked
// channel still subscribed is read forward from history; wildcard patterns
// are reported as possible gaps (channels never seen here cannot be
// caught up).
func (rd *reader) catchUp(ctx context.Context, h engine.Handler) {
	patterns := rd.e.patternList()
	for name, t := range rd.tracked {
		if !coveredBy(name, patterns) {
			delete(rd.tracked, name)
			continue
		}
		if rd.diverged(ctx, name, t) {
			h.OnGap(name, engine.Position{Epoch: t.epoch, Offset: t.offset}, engine.Position{})
			delete(rd.tracked, name)
			continue
		}
		rd.fill(ctx, h, name, t, 0)
	}
	for _, p := range patterns {
		if channel.IsWildcard(p) {
			h.OnGap(p, engine.Position{}, engine.Position{})
		}
	}
}

// diverged reports whether the channel's stream now holds, at the last
// offset delivered here, another publication than the one delivered: a
// failover promoted a replica that lacked it, and the offset was reused.
// Publications are told apart by their time (ms), which differs since a
// failover takes longer than a millisecond. A trimmed or unreadable entry
// is left to History, which catches a stream that is behind.
func (rd *reader) diverged(ctx context.Context, name string, t *tracked) bool {
	if t.at == 0 || t.offset == 0 {
		return false
	}
	r := rd.e
	id := strconv.FormatUint(t.offset, 10) + "-0"
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	es, err := r.client.XRange(hctx, r.lay.streamKey(name), id, id).Result()
	if err != nil || len(es) == 0 {
		return false
	}
	at, err := strconv.ParseInt(fmt.Sprint(es[0].Values["t"]), 10, 64)
	if err != nil || at == t.at {
		return false
	}
	r.log.Warn("redis: the stream holds another publication at an offset delivered here (a failover lost it); reporting a gap", "channel", name, "offset", t.offset)
	return true
}

func coveredBy(name string, patterns []string) bool {
	for _, p := range patterns {
		if channel.Match(p, name) {
			return true
		}
	}
	return false
}

// untrackUncovered forgets channels no pattern covers any more, so a later
// subscription starts from the position at that time, neither replaying
// the unsubscribed period nor taking it for a gap.
func (rd *reader) untrackUncovered() {
	patterns := rd.e.patternList()
	for name := range rd.tracked {
		if !coveredBy(name, patterns) {
			delete(rd.tracked, name)
		}
	}
}

// sweepTracked forgets channels idle for longer than history lives.
func (rd *reader) sweepTracked(now time.Time) {
	r := rd.e
	for name, t := range rd.tracked {
		if now.Sub(t.seen) > r.cfg.Retention.MaxTTL() {
			delete(rd.tracked, name)
		}
	}
}

func cutString(s string, sep byte) (before, after string, ok bool) {
	i := strings.IndexByte(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

// signal does a non-blocking send on a channel of capacity 1.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
