package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

// reader owns one partition's pub/sub connection (the only one on a single
// instance) and the offset tracking of the partition's channels. It runs
// as two goroutines (redis_batch.go): pump reads the connection, consume
// delivers.
//
// Concurrency: subscribe and unsubscribe are called from any goroutine and
// take mu; the tracking state (tracked, lost) belongs to consume; failing
// to pump. In cluster mode only pump replaces ps (reset), after its slot
// moved or its connection failed.
type reader struct {
	e    *Redis
	part int
	kick chan struct{} // cap 1: ps was created
	q    chan any      // pump -> consume (receiveQueue)

	mu      sync.Mutex
	ps      *redis.PubSub          // nil in cluster mode until the first subscription
	want    map[string]bool        // Redis channels held, for resubscription
	pending map[string]*pendingSub // Redis channel -> waiting for confirmation

	// consume's state.
	tracked map[string]*tracked
	lost    bool // the connection failed; catch up on resubscribe

	failing bool // pump's: the connection failed and is not back yet

	up chanFlag // connection believed healthy
}

func newReader(e *Redis, part int) *reader {
	return &reader{
		e: e, part: part, kick: make(chan struct{}, 1), q: make(chan any, receiveQueue),
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

// restoreIfIdle (pump) reports a failed connection that holds no channel
// as restored (connRestored) as soon as Redis answers: no subscription
// confirmation will come to say so, and nothing needs catching up.
func (rd *reader) restoreIfIdle(ctx context.Context) bool {
	rd.mu.Lock()
	idle, ps := len(rd.want) == 0, rd.ps
	rd.mu.Unlock()
	if !rd.failing || !idle {
		return true
	}
	if ps != nil {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := ps.Ping(pctx)
		cancel()
		if err != nil {
			return true
		}
	}
	rd.failing = false
	return rd.send(ctx, connRestored)
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

// reset (cluster mode, pump) replaces the connection by a new
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

// catchUpPatience bounds how long a catch-up (or the filling of a gap)
// retries a history read the backend could not answer (engine.ErrUnavailable)
// before it reports a gap. The pub/sub connection can come back before
// commands do: during a Sentinel failover it may reach the new primary
// while the sentinel asked for a command's connection still names the old
// one (refused), or a node's Redis Cluster map is not yet reloaded. A gap
// ends every session on the channel (410, handshake again); a read that
// succeeds a few seconds later loses nothing. Meanwhile pump keeps reading
// into the bounded queue (receiveQueue), then waits.
const catchUpPatience = 30 * time.Second

// patience is one catch-up's retry budget, shared by its channels: once
// it is spent, the channels still to read try once each.
type patience struct {
	until time.Time
	spent bool
}

func newPatience() *patience { return &patience{until: time.Now().Add(catchUpPatience)} }

// history reads name's history after pos, retrying with back-off (50 ms
// doubling to 1 s) while the backend is unavailable and pt lasts.
func (rd *reader) history(ctx context.Context, pt *patience, name string, after engine.Position, limit int) ([]engine.Publication, error) {
	backoff := 50 * time.Millisecond
	for tries := 1; ; tries++ {
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		pubs, err := rd.e.History(hctx, name, after, limit)
		cancel()
		if err == nil || !errors.Is(err, engine.ErrUnavailable) || pt.spent {
			return pubs, err
		}
		if time.Now().Add(backoff).After(pt.until) {
			pt.spent = true
			return nil, err
		}
		if tries == 1 {
			rd.e.log.Info("redis: history unavailable; retrying before reporting a gap", "channel", name, "patience", catchUpPatience, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}

// fill delivers publications (t.offset, upTo] of channel from history, or
// reports them as a gap. upTo == 0 means "everything history has" (catch-up
// after a reconnect), where only a hole, not the end, is a gap.
func (rd *reader) fill(ctx context.Context, pt *patience, h engine.Handler, name string, t *tracked, upTo uint64) {
	r := rd.e
	bounded := upTo != 0
	if bounded && upTo <= t.offset {
		return
	}
	limit := 0
	if bounded {
		limit = int(upTo - t.offset)
	}
	pubs, err := rd.history(ctx, pt, name, engine.Position{Epoch: t.epoch, Offset: t.offset}, limit)
	if !bounded && errors.Is(err, engine.ErrPositionGone) {
		h.OnGap(name, engine.Position{Epoch: t.epoch, Offset: t.offset}, engine.Position{})
		rd.restart(ctx, pt, h, name, t)
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

// restart follows name, whose position t history no longer holds (a
// failover gave the channel a new epoch or reused t's offset for another
// publication, or its history was trimmed past t; the gap is already
// reported), from what history holds now: the publications of another
// epoch, or after t in its own, are delivered in order, so that those
// made while this node was resubscribing (a new master's first ones) are
// not lost as well. Without history the channel
// is forgotten: its next publication starts it again.
func (rd *reader) restart(ctx context.Context, pt *patience, h engine.Handler, name string, t *tracked) {
	old := *t
	pubs, err := rd.history(ctx, pt, name, engine.Retained, 0)
	if err != nil {
		rd.e.log.Warn("redis: channel history unreadable after a gap", "channel", name, "err", err)
		delete(rd.tracked, name)
		return
	}
	t.epoch, t.offset, t.at = "", 0, 0
	for i := range pubs {
		p := &pubs[i]
		if p.Epoch == old.epoch && p.Offset <= old.offset {
			continue
		}
		h.OnPublication(p)
		t.epoch, t.offset, t.at = p.Epoch, p.Offset, p.Time
	}
	if t.epoch == "" {
		delete(rd.tracked, name)
	}
}

// catchUp runs after the pub/sub connection came back: every tracked
// channel still subscribed is read forward from history; wildcard patterns
// are reported as possible gaps (channels never seen here cannot be
// caught up).
func (rd *reader) catchUp(ctx context.Context, h engine.Handler) {
	patterns := rd.e.patternList()
	pt := newPatience()
	for name, t := range rd.tracked {
		if !coveredBy(name, patterns) {
			delete(rd.tracked, name)
			continue
		}
		if rd.diverged(ctx, name, t) {
			h.OnGap(name, engine.Position{Epoch: t.epoch, Offset: t.offset}, engine.Position{})
			rd.restart(ctx, pt, h, name, t)
			continue
		}
		rd.fill(ctx, pt, h, name, t, 0)
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
