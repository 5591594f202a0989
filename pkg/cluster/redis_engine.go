package cluster

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/tracing"
)

//go:embed publish.lua
var publishLua string

// RedisConfig configures the Redis engine.
type RedisConfig struct {
	// URL is a redis:// or rediss:// URL (password, db and TLS as usual)
	// for a single instance; a redis+sentinel:// (rediss+sentinel://) URL
	// listing the sentinels of a primary with replicas (see
	// SentinelScheme); or a redis+cluster:// (rediss+cluster://) URL
	// listing seed nodes of a Redis Cluster, "redis+cluster://h1:p1,h2:p2",
	// with an optional "?partitions=N" (default 64; see layout).
	URL string
	// WaitReplicas, if positive, makes Publish acknowledge a publication
	// only once that many replicas have it (WAIT, in the same round trip
	// as the publish script), so that a failover does not lose it. A WAIT
	// that reaches fewer replicas within WaitTimeout fails the publish
	// with ErrNotReplicated. For Sentinel and Redis Cluster (on a single
	// instance without replicas every publish would fail).
	WaitReplicas int
	// WaitTimeout bounds the WAIT (default 1s).
	WaitTimeout time.Duration
	// PipelineSize is the most publishes the node sends to Redis in one
	// pipeline (default DefaultPipelineSize; see publisher).
	PipelineSize int
	// PipelineDelay, if positive, is how long a pipeline waits for more
	// publishes after its first before it is sent; 0 sends what is queued
	// as soon as the previous pipeline has returned.
	PipelineDelay time.Duration
	// Prefix of every key and pub/sub channel (default "bx").
	Prefix string
	// HistorySize is the number of publications kept per channel (default
	// 1000; trimmed approximately).
	HistorySize int
	// HistoryTTL is how long a channel's offset and history live after its
	// last publication (default 5 minutes).
	HistoryTTL time.Duration
	// Retention, if set, overrides HistorySize and HistoryTTL per channel
	// pattern.
	Retention *engine.Retention
	// SubscribeTimeout bounds waiting for Redis to confirm a subscription
	// (default 5s).
	SubscribeTimeout time.Duration
	Logger           *slog.Logger
	// Observer, if not nil, is told the duration and outcome of every
	// publish and history command.
	Observer Observer
	// Tracer, if not nil, traces each publish script call and each
	// publication's fan-out here, carrying the trace context in the
	// envelope (see package tracing).
	Tracer *tracing.Tracer
}

// Redis is the cluster engine. It implements engine.Engine, on one Redis
// instance or on a Redis Cluster with sharded pub/sub (see layout).
//
// Delivery: one reader per partition (one in single-instance mode) reads
// the partition's pub/sub connection (redis_batch.go), deduplicates
// publications that arrive on several of the node's Redis channels (a
// channel and a wildcard pattern), checks offsets per channel and fills
// gaps from the history stream, so the Handler sees each publication once,
// in offset order per channel, in batches of what the connection had
// buffered when the Handler is an engine.BatchHandler. A channel belongs to one partition, so its
// calls are serialized; different partitions call the Handler
// concurrently. After a pub/sub connection is lost and re-established (in
// cluster mode also after its slot moved to another shard, or a failover),
// every channel of the partition seen recently is caught up from history;
// what history no longer holds is reported with OnGap, as is every
// wildcard pattern (whose unseen channels cannot be caught up).
type Redis struct {
	cfg    RedisConfig
	log    *slog.Logger
	client redis.UniversalClient
	cc     *redis.ClusterClient // nil on a single instance or Sentinel
	// primary confirms each new connection's server (Sentinel mode; nil
	// otherwise).
	primary   *primaryCheck
	mode      string // "single", "sentinel" or "cluster"
	lay       layout
	script    *redis.Script // the publish script (setScript)
	scriptSrc string
	pub       *publisher

	mu       sync.Mutex
	patterns map[string]bool // subscribed patterns
	readers  []*reader       // one per partition

	health healthState

	closed    atomic.Bool
	closeOnce sync.Once
}

var _ engine.Engine = (*Redis)(nil)

// tracked is the position of a channel delivered on this node. Its name
// and epoch are strings of their own, not parts of a received envelope:
// the publications delivered share them.
type tracked struct {
	name   string
	epoch  string
	offset uint64
	at     int64 // time (unix ms) of the publication at offset; 0: unknown
	seen   time.Time
}

// chanFlag is a boolean shared between goroutines, behind its own mutex.
type chanFlag struct {
	mu sync.Mutex
	v  bool
}

func (f *chanFlag) set(v bool) { f.mu.Lock(); f.v = v; f.mu.Unlock() }
func (f *chanFlag) get() bool  { f.mu.Lock(); defer f.mu.Unlock(); return f.v }

// NewRedis connects to Redis (it returns an error if Redis does not answer
// a PING within ctx) and prepares the engine.
func NewRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = "bx"
	}
	if cfg.HistorySize <= 0 {
		cfg.HistorySize = 1000
	}
	if cfg.HistoryTTL <= 0 {
		cfg.HistoryTTL = 5 * time.Minute
	}
	if cfg.Retention == nil {
		cfg.Retention = engine.DefaultRetention(cfg.HistorySize, cfg.HistoryTTL)
	}
	if cfg.SubscribeTimeout <= 0 {
		cfg.SubscribeTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.WaitReplicas > 0 && cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = time.Second
	}
	r := &Redis{cfg: cfg, log: cfg.Logger, patterns: map[string]bool{}}
	r.health.up, r.health.since = true, time.Now()
	if err := r.dial(ctx); err != nil {
		return nil, err
	}
	for p := range r.lay.partitions() {
		r.readers = append(r.readers, newReader(r, p))
	}
	if r.cc == nil {
		r.readers[0].ps = r.client.(*redis.Client).Subscribe(ctx)
	}
	if err := r.script.Load(ctx, r.client).Err(); err != nil {
		_ = r.closeClient()
		return nil, fmt.Errorf("redis script load: %w", err)
	}
	if err := r.warmPipelines(ctx); err != nil {
		_ = r.closeClient()
		return nil, fmt.Errorf("redis pipeline connection: %w", err)
	}
	r.pub = newPublisher(r)
	return r, nil
}

// warmPipelines opens the pipeline connection (go-redis keeps pipelines
// in a pool of their own) with a pipelined PING, on every master of a
// Redis Cluster, so that the first publish does not pay for a dial.
func (r *Redis) warmPipelines(ctx context.Context) error {
	ping := func(ctx context.Context, c *redis.Client) error {
		pipe := c.Pipeline()
		pipe.Ping(ctx)
		_, err := pipe.Exec(ctx)
		return err
	}
	if r.cc != nil {
		return r.cc.ForEachMaster(ctx, ping)
	}
	if c, ok := r.client.(*redis.Client); ok {
		return ping(ctx, c)
	}
	return nil
}

func newEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Publish implements engine.Engine with one EVALSHA, sent in the node's
// next pipeline (see publisher); it returns when that pipeline has.
func (r *Redis) Publish(ctx context.Context, name string, payload []byte) (engine.Publication, error) {
	return r.PublishAsync(ctx, name, payload)()
}

var _ engine.AsyncPublisher = (*Redis)(nil)

// PublishAsync implements engine.AsyncPublisher: the publish is queued for
// the node's pipelines when it returns (in call order), and wait returns
// when its pipeline has.
func (r *Redis) PublishAsync(ctx context.Context, name string, payload []byte) (wait func() (engine.Publication, error)) {
	ctx, span := r.cfg.Tracer.RedisPublish(ctx, name)
	var buf [channel.MaxDepth + 2]string
	cands := channel.Candidates(buf[:0], name)
	args := make([]any, 0, 7+len(cands))
	size, ttl := r.cfg.Retention.For(name)
	args = append(args, payload, size, ttl.Milliseconds(), newEpoch(), time.Now().UnixMilli(), name, r.cfg.Tracer.TraceParent(ctx))
	part := r.lay.partition(name)
	for _, c := range cands {
		args = append(args, r.lay.psChan(part, c))
	}
	q := &pubReq{keys: []string{r.lay.metaKey(name), r.lay.streamKey(name)}, args: args, bytes: len(payload)}
	var start time.Time
	if r.cfg.Observer != nil {
		start = time.Now()
	}
	queued := r.pub.enqueue(ctx, q)
	return func() (pub engine.Publication, err error) {
		defer func() { tracing.Published(span, pub.Offset, err); span.End() }()
		if err = queued; err == nil {
			if err = r.pub.await(ctx, q); err == nil {
				err = q.err
			}
		}
		if r.cfg.Observer != nil {
			r.cfg.Observer.RedisCommand(OpPublish, time.Since(start), err)
		}
		return r.published(ctx, name, payload, q.res, err)
	}
}

// published turns a publish's script result (or error) into its outcome.
func (r *Redis) published(ctx context.Context, name string, payload []byte, res []any, err error) (engine.Publication, error) {
	switch {
	case errors.Is(err, ErrNotReplicated):
		return engine.Publication{}, fmt.Errorf("publish %s: %w", name, err)
	case errors.Is(err, engine.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return engine.Publication{}, fmt.Errorf("%w: publish %s: %w", engine.ErrUnavailable, name, err)
	case err != nil:
		r.failed(ctx, err)
		return engine.Publication{}, fmt.Errorf("%w: publish %s: %w", engine.ErrUnavailable, name, err)
	}
	if len(res) != 2 {
		return engine.Publication{}, fmt.Errorf("publish %s: unexpected script result %v", name, res)
	}
	epoch, _ := res[0].(string)
	off, _ := res[1].(int64)
	return engine.Publication{Channel: name, Epoch: epoch, Offset: uint64(off), Payload: payload}, nil
}

// failed reacts to a failed command: on a cluster, an error that is not a
// Redis reply (a dead or unreachable master: failover in progress) makes
// the client reload the slot map in the background (coalesced by
// go-redis), so that commands find the promoted replica.
func (r *Redis) failed(ctx context.Context, err error) {
	var re redis.Error
	if r.cc != nil && !errors.As(err, &re) {
		r.cc.ReloadState(ctx)
	}
}

func isNoScript(err error) bool {
	return err != nil && len(err.Error()) >= 8 && err.Error()[:8] == "NOSCRIPT"
}

// Subscribe implements engine.Engine: it returns once Redis confirmed the
// subscription, so a publication made after it returns is delivered. For a
// concrete channel it first reads the channel's position, from which the
// reader starts tracking it: a publication missed later (say, across a
// reconnect) is then caught up from history, even on a channel that had no
// traffic yet. A wildcard pattern is subscribed on every partition.
func (r *Redis) Subscribe(ctx context.Context, pattern string) error {
	type sub struct {
		rd *reader
		ch string
		p  *pendingSub
	}
	var subs []sub
	if channel.IsWildcard(pattern) {
		for _, rd := range r.readers {
			subs = append(subs, sub{rd, r.lay.psChan(rd.part, pattern), &pendingSub{done: make(chan struct{}), channel: pattern}})
		}
	} else {
		vals, err := r.client.HMGet(ctx, r.lay.metaKey(pattern), "e", "o").Result()
		if err != nil {
			return fmt.Errorf("%w: redis subscribe %s: %w", engine.ErrUnavailable, pattern, err)
		}
		p := &pendingSub{done: make(chan struct{}), channel: pattern, concrete: true}
		p.epoch, _ = vals[0].(string)
		if o, ok := vals[1].(string); ok {
			p.offset, _ = strconv.ParseUint(o, 10, 64)
		}
		part := r.lay.partition(pattern)
		subs = append(subs, sub{r.readers[part], r.lay.psChan(part, pattern), p})
	}
	r.mu.Lock()
	r.patterns[pattern] = true
	r.mu.Unlock()
	undo := func() {
		r.mu.Lock()
		delete(r.patterns, pattern)
		r.mu.Unlock()
		for _, s := range subs {
			s.rd.unsubscribeQuietly(s.ch)
		}
	}
	for _, s := range subs {
		if err := s.rd.subscribe(ctx, s.ch, s.p); err != nil {
			undo()
			return fmt.Errorf("%w: redis subscribe %s: %w", engine.ErrUnavailable, pattern, err)
		}
	}
	t := time.NewTimer(r.cfg.SubscribeTimeout)
	defer t.Stop()
	for _, s := range subs {
		select {
		case <-s.p.done:
		case <-ctx.Done():
			undo()
			return fmt.Errorf("redis subscribe %s: %w", pattern, ctx.Err())
		case <-t.C:
			undo()
			return fmt.Errorf("redis subscribe %s: %w: no confirmation within %v", pattern, engine.ErrUnavailable, r.cfg.SubscribeTimeout)
		}
	}
	return nil
}

// pendingSub is a subscription waiting for Redis to confirm it.
type pendingSub struct {
	done     chan struct{}
	channel  string
	concrete bool
	epoch    string // the channel's position when subscribing (concrete only)
	offset   uint64
}

// Unsubscribe implements engine.Engine.
func (r *Redis) Unsubscribe(ctx context.Context, pattern string) error {
	r.mu.Lock()
	delete(r.patterns, pattern)
	r.mu.Unlock()
	readers := r.readers
	if !channel.IsWildcard(pattern) {
		readers = r.readers[r.lay.partition(pattern) : r.lay.partition(pattern)+1]
	}
	var first error
	for _, rd := range readers {
		if err := rd.unsubscribe(ctx, r.lay.psChan(rd.part, pattern)); err != nil && first == nil {
			first = fmt.Errorf("redis unsubscribe %s: %w", pattern, err)
		}
	}
	return first
}

// patternList returns the subscribed patterns.
func (r *Redis) patternList() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.patterns))
	for p := range r.patterns {
		out = append(out, p)
	}
	return out
}

// History implements engine.Engine from the channel's stream.
func (r *Redis) History(ctx context.Context, name string, after engine.Position, limit int) ([]engine.Publication, error) {
	pipe := r.client.Pipeline()
	metaCmd := pipe.HMGet(ctx, r.lay.metaKey(name), "e", "o")
	size, ttl := r.cfg.Retention.For(name)
	count := int64(limit)
	if count <= 0 {
		count = int64(size)
	}
	rangeCmd := pipe.XRangeN(ctx, r.lay.streamKey(name), strconv.FormatUint(after.Offset+1, 10)+"-0", "+", count)
	var start time.Time
	if r.cfg.Observer != nil {
		start = time.Now()
	}
	_, err := pipe.Exec(ctx)
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	if r.cfg.Observer != nil {
		r.cfg.Observer.RedisCommand(OpHistory, time.Since(start), err)
	}
	if err != nil {
		r.failed(ctx, err)
		return nil, fmt.Errorf("%w: history %s: %w", engine.ErrUnavailable, name, err)
	}
	meta := metaCmd.Val()
	epoch, _ := meta[0].(string)
	var last uint64
	if s, ok := meta[1].(string); ok {
		last, _ = strconv.ParseUint(s, 10, 64)
	}
	if epoch == "" {
		if after.Offset == 0 {
			return nil, nil
		}
		return nil, engine.ErrPositionGone
	}
	if after.Epoch != "" && after.Epoch != epoch && after != engine.Retained {
		return nil, engine.ErrPositionGone
	}
	if after != engine.Retained && after.Epoch == epoch && after.Offset > last {
		// The stream went backwards: a Redis failover lost writes that
		// the old master had acknowledged. Whatever is published next
		// reuses offsets already delivered, so the position is gone.
		return nil, engine.ErrPositionGone
	}
	cutoff := time.Now().Add(-ttl).UnixMilli()
	var out []engine.Publication
	for _, e := range rangeCmd.Val() {
		off, err := parseStreamID(e.ID)
		if err != nil {
			continue
		}
		ts, _ := strconv.ParseInt(fmt.Sprint(e.Values["t"]), 10, 64)
		if ts < cutoff {
			continue
		}
		p, _ := e.Values["p"].(string)
		out = append(out, engine.Publication{Channel: name, Epoch: epoch, Offset: off, Payload: []byte(p), Time: ts})
	}
	if after != engine.Retained && after.Offset < last && (len(out) == 0 || out[0].Offset > after.Offset+1) {
		return nil, engine.ErrPositionGone
	}
	return out, nil
}

// Head implements engine.Engine.
func (r *Redis) Head(ctx context.Context, name string) (engine.Position, error) {
	meta, err := r.client.HMGet(ctx, r.lay.metaKey(name), "e", "o").Result()
	if err != nil {
		r.failed(ctx, err)
		return engine.Position{}, fmt.Errorf("%w: head %s: %w", engine.ErrUnavailable, name, err)
	}
	epoch, _ := meta[0].(string)
	if epoch == "" {
		return engine.Position{}, nil
	}
	var last uint64
	if s, ok := meta[1].(string); ok {
		last, _ = strconv.ParseUint(s, 10, 64)
	}
	return engine.Position{Epoch: epoch, Offset: last}, nil
}

// Channels implements engine.Engine with SCAN over the channels' meta
// keys under the pattern's static prefix (cost: the keyspace, in pages of
// 1000, on every shard; used only when a wildcard subscription asks for
// replay).
func (r *Redis) Channels(ctx context.Context, pattern string) ([]string, error) {
	prefix := pattern[:strings.LastIndexByte(pattern, '/')+1]
	match := r.lay.metaMatch(globEscape(prefix))
	var mu sync.Mutex
	var out []string
	scan := func(ctx context.Context, c *redis.Client) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, match, 1000).Result()
			if err != nil {
				return err
			}
			mu.Lock()
			for _, k := range keys {
				if name := r.lay.metaName(k); name != "" && channel.Match(pattern, name) {
					out = append(out, name)
				}
			}
			mu.Unlock()
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	var err error
	if r.cc != nil {
		err = r.cc.ForEachMaster(ctx, scan)
	} else {
		err = scan(ctx, r.client.(*redis.Client))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: channels %s: %w", engine.ErrUnavailable, pattern, err)
	}
	return out, nil
}

// globEscape escapes Redis glob metacharacters.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func parseStreamID(id string) (uint64, error) {
	for i := 0; i < len(id); i++ {
		if id[i] == '-' {
			return strconv.ParseUint(id[:i], 10, 64)
		}
	}
	return strconv.ParseUint(id, 10, 64)
}

// Close implements engine.Engine.
func (r *Redis) Close() error {
	var err error
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		r.pub.close()
		r.closeReaders()
		err = r.closeClient()
	})
	return err
}

// Ready reports whether every pub/sub connection is believed healthy.
func (r *Redis) Ready() bool {
	for _, rd := range r.readers {
		if !rd.up.get() {
			return false
		}
	}
	return true
}

// Client returns the command client (for the session store, tests and
// health checks): a *redis.Client on a single instance, a
// *redis.ClusterClient on a Redis Cluster.
func (r *Redis) Client() redis.UniversalClient { return r.client }
