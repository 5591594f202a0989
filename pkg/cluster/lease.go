package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lease is a node's right to act on its sessions (docs/architecture.md,
// "Fencing"). It is a Redis key "<prefix>:lease:{<tag>}" holding the
// lease's generation, with a time to live shorter than failure detection
// plus the adoption delay, renewed by the node. A peer adopts the node's
// sessions only once the key is gone (broker adopt.go reads it through
// SessionStore.LeaseHeld).
//
// The node measures the lease on its own monotonic clock from the moment
// it sent the renewal, so its local deadline passes before Redis expires
// the key: a node frozen (or cut off from Redis) beyond its deadline knows
// it lost the lease before it acts again, whatever else it believes.
//
// Each time the lease is taken again after a lapse it gets a new
// generation. Session records name their owner as "<tag>.<generation>"
// (ownerOf): records written under an older generation are re-validated
// (the regain callback, see SetRegain) before the node acts on their
// sessions, and an adopter's compare-and-set on the old owner string fails
// once they were.
type Lease struct {
	client redis.UniversalClient
	key    string
	ttl    time.Duration
	every  time.Duration // renewal period
	log    *slog.Logger
	base   time.Time // monotonic reference for deadlines

	renew *redis.Script

	st atomic.Pointer[leaseState]

	mu     sync.Mutex
	regain func(ctx context.Context, gen int64) error
	heldCh chan struct{} // closed when the lease is held; replaced on a lapse

	// Logging during a long outage: a lapse once per generation, failed
	// renewals and takes at most every leaseWarnEvery.
	lapsedGen int64
	lastWarn  time.Time
}

// leaseWarnEvery bounds the lease's repeated warnings during an outage.
const leaseWarnEvery = 10 * time.Second

// warn logs at WARN at most every leaseWarnEvery.
func (l *Lease) warn(msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	due := now.Sub(l.lastWarn) >= leaseWarnEvery
	if due {
		l.lastWarn = now
	}
	l.mu.Unlock()
	if due {
		l.log.Warn(msg, args...)
	}
}

// leaseState is the lease's generation and local deadline (time since
// base); the pair changes at once.
type leaseState struct {
	gen      int64
	deadline time.Duration
}

// renewLua: KEYS[1] lease; ARGV generation, ttl ms. Extends the lease if
// it still holds this generation (1), else 0 (expired, or lost with
// Redis data).
var renewLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`

// leaseTiming returns the lease's time to live and renewal period. The
// time to live is below failure detection plus the adoption delay
// (adoptDelay), so that the lease adds no wait to an adoption.
func leaseTiming(fast bool) (ttl, every time.Duration) {
	if fast {
		return 1500 * time.Millisecond, 300 * time.Millisecond
	}
	return 5 * time.Second, time.Second
}

// leaseKey is the Redis key of tag's lease.
func leaseKey(prefix, tag string) string {
	if prefix == "" {
		prefix = "bx"
	}
	return prefix + ":lease:{" + tag + "}"
}

// NewLease returns the (not yet held) lease of node tag.
func NewLease(client redis.UniversalClient, prefix, tag string, ttl, every time.Duration, log *slog.Logger) *Lease {
	if log == nil {
		log = slog.Default()
	}
	l := &Lease{
		client: client, key: leaseKey(prefix, tag), ttl: ttl, every: every, log: log,
		base: time.Now(), renew: redis.NewScript(renewLua), heldCh: make(chan struct{}),
	}
	l.st.Store(&leaseState{})
	return l
}

// SetRegain installs f, called each time the lease is taken (the first
// time too) with its new generation, before Held reports true. An error
// leaves the lease not held; it is tried again at the next renewal.
func (l *Lease) SetRegain(f func(ctx context.Context, gen int64) error) {
	l.mu.Lock()
	l.regain = f
	l.mu.Unlock()
}

func (l *Lease) now() time.Duration { return time.Since(l.base) }

// Held reports whether the lease is held now, on the local clock.
func (l *Lease) Held() bool {
	st := l.st.Load()
	return st.gen > 0 && l.now() < st.deadline
}

// current returns the generation and whether the lease is held now.
func (l *Lease) current() (int64, bool) {
	st := l.st.Load()
	return st.gen, st.gen > 0 && l.now() < st.deadline
}

// Wait blocks until the lease is held or ctx ends.
func (l *Lease) Wait(ctx context.Context) error {
	for !l.Held() {
		l.mu.Lock()
		ch := l.heldCh
		l.mu.Unlock()
		if l.Held() {
			return nil
		}
		// A lapse is only seen by the clock: poll, but wake at once when
		// the lease is taken again.
		select {
		case <-ch:
		case <-time.After(l.every / 4):
		case <-ctx.Done():
			return fmt.Errorf("wait for the node's lease: %w", ctx.Err())
		}
	}
	return nil
}

// Run renews the lease until ctx ends, taking it again (new generation,
// regain callback) whenever it lapsed.
func (l *Lease) Run(ctx context.Context) {
	t := time.NewTicker(l.every)
	defer t.Stop()
	for {
		l.step(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// step renews the lease once, or takes it again if it lapsed.
func (l *Lease) step(parent context.Context) {
	ctx, cancel := context.WithTimeout(parent, l.ttl)
	defer cancel()
	st := l.st.Load()
	sent := l.now()
	if st.gen > 0 && sent < st.deadline {
		ok, err := l.renew.Run(ctx, l.client, []string{l.key}, st.gen, l.ttl.Milliseconds()).Int()
		switch {
		case err != nil && parent.Err() != nil:
			return // Run is stopping (the node shuts down): not a failure
		case err != nil:
			l.warn("lease not renewed", "err", err, "left", (st.deadline - l.now()).String())
			return
		case ok == 1:
			l.extend(st, sent+l.ttl)
			return
		}
		l.log.Warn("lease lost in Redis before its local deadline (Redis data lost?)", "generation", st.gen)
	}
	if st.gen > 0 {
		l.lapse(st.gen)
	}
	if err := l.take(ctx, st.gen+1); err != nil && parent.Err() == nil {
		l.warn("lease not taken", "generation", st.gen+1, "err", err)
	}
}

// extend moves the deadline of st forward to d (if st is still current).
func (l *Lease) extend(st *leaseState, d time.Duration) {
	if d > st.deadline {
		l.st.CompareAndSwap(st, &leaseState{gen: st.gen, deadline: d})
	}
}

// lapse records that the lease was lost: waiters wait for the next one.
func (l *Lease) lapse(gen int64) {
	l.mu.Lock()
	select {
	case <-l.heldCh:
		l.heldCh = make(chan struct{})
	default:
	}
	first := l.lapsedGen != gen
	l.lapsedGen = gen
	l.mu.Unlock()
	if first {
		l.log.Warn("lease lapsed: this node acts on no session until it holds it again", "generation", gen)
	}
}

// take sets the lease with generation gen, runs the regain callback and
// then marks it held until sent+ttl.
func (l *Lease) take(ctx context.Context, gen int64) error {
	sent := l.now()
	if err := l.client.Set(ctx, l.key, gen, l.ttl).Err(); err != nil {
		return fmt.Errorf("set lease: %w", err)
	}
	l.mu.Lock()
	regain := l.regain
	l.mu.Unlock()
	if regain != nil {
		if err := regain(ctx, gen); err != nil {
			return fmt.Errorf("re-validate sessions: %w", err)
		}
	}
	deadline := sent + l.ttl
	if l.now() >= deadline {
		return errors.New("re-validation outlasted the lease")
	}
	l.st.Store(&leaseState{gen: gen, deadline: deadline})
	l.mu.Lock()
	select {
	case <-l.heldCh:
	default:
		close(l.heldCh)
	}
	l.lastWarn = time.Time{} // the next outage is told at once
	l.mu.Unlock()
	if gen > 1 {
		l.log.Info("lease taken again", "generation", gen)
	}
	return nil
}

// Acquire takes the lease for the first time (Start calls it before the
// node serves); ctx bounds it.
func (l *Lease) Acquire(ctx context.Context) error {
	gen, _ := l.current()
	return l.take(ctx, gen+1)
}

// LeaseHeld reports whether node tag's lease exists in Redis (a peer's
// sessions are adopted only once it is gone).
func LeaseHeld(ctx context.Context, client redis.UniversalClient, prefix, tag string) (bool, error) {
	n, err := client.Exists(ctx, leaseKey(prefix, tag)).Result()
	if err != nil {
		return false, fmt.Errorf("lease of %s: %w", tag, err)
	}
	return n == 1, nil
}

// ownerOf is the owner string of a session record: the node tag, and the
// generation of its lease (0: a store without lease, the tag alone).
func ownerOf(tag string, gen int64) string {
	if gen == 0 {
		return tag
	}
	return tag + "." + strconv.FormatInt(gen, 10)
}

// Held implements broker.Fence: the node may act on its sessions (always,
// without a lease).
func (s *SessionStore) Held() bool { return s.lease == nil || s.lease.Held() }

// Wait implements broker.Fence.
func (s *SessionStore) Wait(ctx context.Context) error {
	if s.lease == nil {
		return nil
	}
	return s.lease.Wait(ctx)
}

// WatchRegain implements broker.Fence: each time the lease is taken, the
// records of the sessions local returns are re-validated under the new
// generation, and regained gets those another node took meanwhile, all
// before the lease reports held.
func (s *SessionStore) WatchRegain(local func() []string, regained func(moved []string)) {
	if s.lease == nil {
		return
	}
	s.lease.SetRegain(func(ctx context.Context, gen int64) error {
		moved, err := s.Revalidate(ctx, gen, local())
		if err != nil {
			return err
		}
		regained(moved)
		return nil
	})
}

// Revalidate makes the records of ids that this node still owns (under any
// generation) owned by generation gen, in pipelined round trips of up to
// 1000, and returns the ids another node took (or that were released). A
// missing record is kept: the broker's refresh writes it again.
func (s *SessionStore) Revalidate(ctx context.Context, gen int64, ids []string) (moved []string, err error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if err := s.reval.Load(ctx, s.client).Err(); err != nil {
		return nil, fmt.Errorf("re-validate sessions: %w", err)
	}
	owner := ownerOf(s.tag, gen)
	const chunk = 1000
	for len(ids) > 0 {
		n := min(chunk, len(ids))
		pipe := s.client.Pipeline()
		cmds := make([]*redis.Cmd, n)
		for i, id := range ids[:n] {
			cmds[i] = s.reval.EvalSha(ctx, pipe, []string{s.key(id)}, owner, s.tag, gen)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return moved, fmt.Errorf("re-validate %d sessions: %w", n, err)
		}
		for i, c := range cmds {
			if v, _ := c.Int(); v == 0 {
				moved = append(moved, ids[i])
			}
		}
		ids = ids[n:]
	}
	return moved, nil
}

// LeaseHeld implements broker.SessionStore: whether node tag's lease
// exists in Redis.
func (s *SessionStore) LeaseHeld(ctx context.Context, tag string) (bool, error) {
	return LeaseHeld(ctx, s.client, s.prefix, tag)
}

// StartLease gives the store a lease with the timings of fast (shorter
// gossip timers) or default gossip, or with time to live ttl if positive
// (renewed every fifth of it), takes it (bounded by ctx) and renews it
// until run ends. The node acts on no session until it is held.
func (s *SessionStore) StartLease(ctx, run context.Context, fast bool, ttl time.Duration, log *slog.Logger) error {
	every := ttl / 5
	if ttl <= 0 {
		ttl, every = leaseTiming(fast)
	}
	l := NewLease(s.client, s.prefix, s.tag, ttl, every, log)
	s.UseLease(l)
	err := l.Acquire(ctx)
	go l.Run(run)
	if err != nil {
		return fmt.Errorf("take the node's lease: %w", err)
	}
	return nil
}
