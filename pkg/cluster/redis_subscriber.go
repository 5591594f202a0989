package cluster

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

// receiveTimeout is how long the reader waits before pinging Redis to check
// the pub/sub connection.
const receiveTimeout = 5 * time.Second

// Run implements engine.Engine: it reads the pub/sub connection and
// delivers to h until ctx ends.
func (r *Redis) Run(ctx context.Context, h engine.Handler) error {
	r.mu.Lock()
	r.handler = h
	r.mu.Unlock()
	r.up.set(true)
	// ReceiveTimeout does not return on ctx cancellation; closing the
	// pub/sub connection does.
	stop := context.AfterFunc(ctx, func() { _ = r.ps.Close() })
	defer stop()
	sweep := time.NewTicker(r.cfg.Retention.MaxTTL() / 2)
	defer sweep.Stop()
	backoff := 50 * time.Millisecond
	for {
		if ctx.Err() != nil {
			return nil
		}
		select {
		case now := <-sweep.C:
			r.sweepTracked(now)
		default:
		}
		msg, err := r.ps.ReceiveTimeout(ctx, receiveTimeout)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Quiet connection: check it is alive.
				if perr := r.ps.Ping(ctx); perr == nil {
					continue
				}
			}
			if !r.lost {
				r.log.Warn("redis pub/sub connection lost", "err", err)
			}
			r.lost = true
			r.up.set(false)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		switch m := msg.(type) {
		case *redis.Subscription:
			switch m.Kind {
			case "subscribe":
				r.mu.Lock()
				p := r.pending[m.Channel]
				delete(r.pending, m.Channel)
				r.mu.Unlock()
				if p != nil {
					if p.concrete && r.tracked[p.channel] == nil {
						r.tracked[p.channel] = &tracked{epoch: p.epoch, offset: p.offset, seen: time.Now()}
					}
					close(p.done)
				}
				if r.lost {
					r.lost = false
					r.up.set(true)
					r.log.Info("redis pub/sub connection restored; catching up from history")
					r.catchUp(ctx, h)
				}
			case "unsubscribe":
				r.untrackUncovered()
			}
		case *redis.Message:
			r.onMessage(ctx, h, m.Payload)
		case *redis.Pong:
		}
	}
}

// onMessage parses an envelope "epoch offset ms channel\npayload" and
// delivers it once, in order, filling a gap from history if needed.
func (r *Redis) onMessage(ctx context.Context, h engine.Handler, env string) {
	head, payload, ok := cutString(env, '\n')
	if !ok {
		r.log.Warn("redis: malformed envelope")
		return
	}
	epoch, rest, ok1 := cutString(head, ' ')
	offs, rest, ok2 := cutString(rest, ' ')
	ms, name, ok3 := cutString(rest, ' ')
	off, err := strconv.ParseUint(offs, 10, 64)
	at, err2 := strconv.ParseInt(ms, 10, 64)
	if !ok1 || !ok2 || !ok3 || err != nil || err2 != nil {
		r.log.Warn("redis: malformed envelope head", "head", head)
		return
	}
	p := &engine.Publication{Channel: name, Epoch: epoch, Offset: off, Payload: []byte(payload), Time: at}
	t := r.tracked[name]
	now := time.Now()
	if t != nil && t.epoch == "" {
		// Subscribed before the channel existed: its first epoch is ours.
		t.epoch = epoch
	}
	switch {
	case t == nil:
		// Seen first through a wildcard pattern: start here.
		r.tracked[name] = &tracked{epoch: epoch, offset: off, seen: now}
	case t.epoch != epoch:
		// The channel's history was reset (Redis lost it): whatever came
		// between cannot be recovered.
		h.OnGap(name, engine.Position{Epoch: t.epoch, Offset: t.offset}, engine.Position{Epoch: epoch, Offset: off - 1})
		t.epoch, t.offset, t.seen = epoch, off, now
	case off <= t.offset:
		return // already delivered (another of our Redis channels, or caught up)
	case off > t.offset+1:
		r.fill(ctx, h, name, t, off-1)
		t.offset, t.seen = off, now
	default:
		t.offset, t.seen = off, now
	}
	h.OnPublication(p)
}

// fill delivers publications (t.offset, upTo] of channel from history, or
// reports them as a gap. upTo == 0 means "everything history has" (catch-up
// after a reconnect), where only a hole, not the end, is a gap.
func (r *Redis) fill(ctx context.Context, h engine.Handler, name string, t *tracked, upTo uint64) {
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
		delete(r.tracked, name)
		return
	}
	if !bounded && err != nil {
		r.log.Warn("redis: catch-up failed", "channel", name, "err", err)
		h.OnGap(name, engine.Position{Epoch: t.epoch, Offset: t.offset}, engine.Position{})
		delete(r.tracked, name)
		return
	}
	if err != nil {
		r.log.Warn("redis: gap not recoverable from history", "channel", name, "from", t.offset, "to", upTo, "err", err)
		h.OnGap(name, engine.Position{Epoch: t.epoch, Offset: t.offset}, engine.Position{Epoch: t.epoch, Offset: upTo})
		t.offset = upTo
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
		t.offset = pubs[i].Offset
	}
	if bounded && t.offset < upTo {
		h.OnGap(name, engine.Position{Epoch: t.epoch, Offset: t.offset}, engine.Position{Epoch: t.epoch, Offset: upTo})
		t.offset = upTo
	}
}

// catchUp runs after the pub/sub connection came back: every tracked
// channel still subscribed is read forward from history; wildcard patterns
// are reported as possible gaps (channels never seen here cannot be
// caught up).
func (r *Redis) catchUp(ctx context.Context, h engine.Handler) {
	r.mu.Lock()
	patterns := make([]string, 0, len(r.patterns))
	for p := range r.patterns {
		patterns = append(patterns, p)
	}
	r.mu.Unlock()
	for name, t := range r.tracked {
		if !coveredBy(name, patterns) {
			delete(r.tracked, name)
			continue
		}
		r.fill(ctx, h, name, t, 0)
	}
	for _, p := range patterns {
		if channel.IsWildcard(p) {
			h.OnGap(p, engine.Position{}, engine.Position{})
		}
	}
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
func (r *Redis) untrackUncovered() {
	r.mu.Lock()
	patterns := make([]string, 0, len(r.patterns))
	for p := range r.patterns {
		patterns = append(patterns, p)
	}
	r.mu.Unlock()
	for name := range r.tracked {
		if !coveredBy(name, patterns) {
			delete(r.tracked, name)
		}
	}
}

// sweepTracked forgets channels idle for longer than history lives.
func (r *Redis) sweepTracked(now time.Time) {
	for name, t := range r.tracked {
		if now.Sub(t.seen) > r.cfg.Retention.MaxTTL() {
			delete(r.tracked, name)
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
