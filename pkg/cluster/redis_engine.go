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
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

//go:embed publish.lua
var publishLua string

// RedisConfig configures the Redis engine.
type RedisConfig struct {
	// URL is a redis:// or rediss:// URL (password, db and TLS as usual).
	URL string
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
}

// Redis is the cluster engine. It implements engine.Engine.
//
// Delivery: one goroutine (Run) reads the node's single pub/sub
// connection, deduplicates publications that arrive on several of the
// node's Redis channels (a channel and a wildcard pattern), checks offsets
// per channel and fills gaps from the history stream, so the Handler sees
// each publication once, in offset order per channel. After the pub/sub
// connection is lost and re-established, every channel seen recently is
// caught up from history; what history no longer holds is reported with
// OnGap, as is every wildcard pattern (whose unseen channels cannot be
// caught up).
type Redis struct {
	cfg    RedisConfig
	log    *slog.Logger
	client *redis.Client
	ps     *redis.PubSub
	script *redis.Script

	mu       sync.Mutex
	patterns map[string]bool        // subscribed patterns
	pending  map[string]*pendingSub // redis channel -> waiting for confirmation
	handler  engine.Handler

	// Reader-goroutine state (only Run's goroutine touches it).
	tracked map[string]*tracked
	lost    bool // the pub/sub connection failed; catch up on resubscribe

	up        chanFlag // pub/sub connection believed healthy
	closeOnce sync.Once
}

var _ engine.Engine = (*Redis)(nil)

type tracked struct {
	epoch  string
	offset uint64
	seen   time.Time
}

// chanFlag is a boolean readable without locks.
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
	opts, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	opts.MaxRetries = 1
	client := redis.NewClient(opts)
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redis ping %s: %w", opts.Addr, err)
	}
	r := &Redis{
		cfg:      cfg,
		log:      cfg.Logger,
		client:   client,
		script:   redis.NewScript(publishLua),
		patterns: map[string]bool{},
		pending:  map[string]*pendingSub{},
		tracked:  map[string]*tracked{},
	}
	r.ps = client.Subscribe(ctx)
	if err := r.script.Load(ctx, client).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redis script load: %w", err)
	}
	return r, nil
}

func (r *Redis) metaKey(ch string) string   { return r.cfg.Prefix + ":{" + ch + "}:m" }
func (r *Redis) streamKey(ch string) string { return r.cfg.Prefix + ":{" + ch + "}:h" }
func (r *Redis) psChan(pattern string) string {
	return r.cfg.Prefix + ":s:" + pattern
}

func newEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Publish implements engine.Engine with one EVALSHA.
func (r *Redis) Publish(ctx context.Context, name string, payload []byte) (engine.Publication, error) {
	var buf [channel.MaxDepth + 2]string
	cands := channel.Candidates(buf[:0], name)
	args := make([]any, 0, 6+len(cands))
	size, ttl := r.cfg.Retention.For(name)
	args = append(args, payload, size, ttl.Milliseconds(), newEpoch(), time.Now().UnixMilli(), name)
	for _, c := range cands {
		args = append(args, r.psChan(c))
	}
	var start time.Time
	if r.cfg.Observer != nil {
		start = time.Now()
	}
	res, err := r.script.EvalSha(ctx, r.client, []string{r.metaKey(name), r.streamKey(name)}, args...).Slice()
	if err != nil && isNoScript(err) {
		res, err = r.script.Eval(ctx, r.client, []string{r.metaKey(name), r.streamKey(name)}, args...).Slice()
	}
	if r.cfg.Observer != nil {
		r.cfg.Observer.RedisCommand(OpPublish, time.Since(start), err)
	}
	if err != nil {
		return engine.Publication{}, fmt.Errorf("%w: publish %s: %w", engine.ErrUnavailable, name, err)
	}
	if len(res) != 2 {
		return engine.Publication{}, fmt.Errorf("publish %s: unexpected script result %v", name, res)
	}
	epoch, _ := res[0].(string)
	off, _ := res[1].(int64)
	return engine.Publication{Channel: name, Epoch: epoch, Offset: uint64(off), Payload: payload}, nil
}

func isNoScript(err error) bool {
	return err != nil && len(err.Error()) >= 8 && err.Error()[:8] == "NOSCRIPT"
}

// Subscribe implements engine.Engine: it returns once Redis confirmed the
// subscription, so a publication made after it returns is delivered. For a
// concrete channel it first reads the channel's position, from which the
// reader starts tracking it: a publication missed later (say, across a
// reconnect) is then caught up from history, even on a channel that had no
// traffic yet.
func (r *Redis) Subscribe(ctx context.Context, pattern string) error {
	ch := r.psChan(pattern)
	p := &pendingSub{done: make(chan struct{}), channel: pattern}
	if !channel.IsWildcard(pattern) {
		vals, err := r.client.HMGet(ctx, r.metaKey(pattern), "e", "o").Result()
		if err != nil {
			return fmt.Errorf("%w: redis subscribe %s: %w", engine.ErrUnavailable, pattern, err)
		}
		p.concrete = true
		p.epoch, _ = vals[0].(string)
		if o, ok := vals[1].(string); ok {
			p.offset, _ = strconv.ParseUint(o, 10, 64)
		}
	}
	r.mu.Lock()
	r.patterns[pattern] = true
	r.pending[ch] = p
	r.mu.Unlock()
	if err := r.ps.Subscribe(ctx, ch); err != nil {
		r.forget(pattern, ch)
		return fmt.Errorf("redis subscribe %s: %w", pattern, err)
	}
	t := time.NewTimer(r.cfg.SubscribeTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		r.unsubscribeQuietly(pattern, ch)
		return fmt.Errorf("redis subscribe %s: %w", pattern, ctx.Err())
	case <-t.C:
		r.unsubscribeQuietly(pattern, ch)
		return fmt.Errorf("redis subscribe %s: %w: no confirmation within %v", pattern, engine.ErrUnavailable, r.cfg.SubscribeTimeout)
	}
}

// pendingSub is a subscription waiting for Redis to confirm it.
type pendingSub struct {
	done     chan struct{}
	channel  string
	concrete bool
	epoch    string // the channel's position when subscribing (concrete only)
	offset   uint64
}

func (r *Redis) forget(pattern, ch string) {
	r.mu.Lock()
	delete(r.patterns, pattern)
	delete(r.pending, ch)
	r.mu.Unlock()
}

func (r *Redis) unsubscribeQuietly(pattern, ch string) {
	r.forget(pattern, ch)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = r.ps.Unsubscribe(ctx, ch)
}

// Unsubscribe implements engine.Engine.
func (r *Redis) Unsubscribe(ctx context.Context, pattern string) error {
	ch := r.psChan(pattern)
	r.forget(pattern, ch)
	if err := r.ps.Unsubscribe(ctx, ch); err != nil {
		return fmt.Errorf("redis unsubscribe %s: %w", pattern, err)
	}
	return nil
}

// History implements engine.Engine from the channel's stream.
func (r *Redis) History(ctx context.Context, name string, after engine.Position, limit int) ([]engine.Publication, error) {
	pipe := r.client.Pipeline()
	metaCmd := pipe.HMGet(ctx, r.metaKey(name), "e", "o")
	size, ttl := r.cfg.Retention.For(name)
	count := int64(limit)
	if count <= 0 {
		count = int64(size)
	}
	rangeCmd := pipe.XRangeN(ctx, r.streamKey(name), strconv.FormatUint(after.Offset+1, 10)+"-0", "+", count)
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
	meta, err := r.client.HMGet(ctx, r.metaKey(name), "e", "o").Result()
	if err != nil {
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
// 1000; used only when a wildcard subscription asks for replay).
func (r *Redis) Channels(ctx context.Context, pattern string) ([]string, error) {
	prefix := pattern[:strings.LastIndexByte(pattern, '/')+1]
	match := r.cfg.Prefix + ":{" + globEscape(prefix) + "*}:m"
	var out []string
	var cursor uint64
	for {
		keys, next, err := r.client.Scan(ctx, cursor, match, 1000).Result()
		if err != nil {
			return nil, fmt.Errorf("%w: channels %s: %w", engine.ErrUnavailable, pattern, err)
		}
		for _, k := range keys {
			name := strings.TrimSuffix(strings.TrimPrefix(k, r.cfg.Prefix+":{"), "}:m")
			if channel.Match(pattern, name) {
				out = append(out, name)
			}
		}
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
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
		_ = r.ps.Close()
		err = r.client.Close()
	})
	return err
}

// Ready reports whether the pub/sub connection is believed healthy.
func (r *Redis) Ready() bool { return r.up.get() }

// Client returns the command client (for tests and health checks).
func (r *Redis) Client() *redis.Client { return r.client }
