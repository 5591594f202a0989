package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

// ErrNotReplicated means a publication was written and published by the
// Redis primary but fewer replicas than RedisConfig.WaitReplicas confirmed
// it within RedisConfig.WaitTimeout: a failover could lose it, so it is
// not acknowledged. Subscribers may still have received it.
var ErrNotReplicated = fmt.Errorf("%w: publication not confirmed by enough Redis replicas", engine.ErrNotDurable)

// dial builds the command client for cfg.URL (single instance, Sentinel
// or Redis Cluster), checks that Redis answers, and sets the layout and
// the publish script.
func (r *Redis) dial(ctx context.Context) error {
	cfg := r.cfg
	var addr string
	switch {
	case IsClusterURL(cfg.URL):
		opts, parts, err := parseClusterURL(cfg.URL)
		if err != nil {
			return fmt.Errorf("redis url: %w", err)
		}
		opts.MaxRetries = 1
		if opts.Protocol == 0 {
			opts.Protocol = 2 // as for a single instance, below
		}
		// go-redis reloads the slot map on MOVED/ASK replies; a dead
		// master only shows as dial errors, after which Publish and
		// History ask for a reload (see failed); this is the backstop.
		opts.ClusterStateReloadInterval = 10 * time.Second
		r.cc = redis.NewClusterClient(opts)
		r.client, r.lay, addr, r.mode = r.cc, newClusterLayout(cfg.Prefix, parts), strings.Join(opts.Addrs, ","), "cluster"
		lua := strings.Replace(publishLua, "redis.call('PUBLISH'", "redis.call('SPUBLISH'", 1)
		if lua == publishLua {
			return errors.New("publish script: no PUBLISH call to shard")
		}
		r.setScript(lua)
	case IsSentinelURL(cfg.URL):
		opts, err := parseSentinelURL(cfg.URL)
		if err != nil {
			return fmt.Errorf("redis url: %w", err)
		}
		opts.MaxRetries = 1
		if opts.Protocol == 0 {
			opts.Protocol = 2
		}
		// The failover client asks the sentinels for the primary on every
		// new connection and drops pooled connections to a demoted one on
		// +switch-master; the pub/sub connection reconnects (to the new
		// primary) when it fails, and the readers then catch up from
		// history as after any reconnect. primaryCheck refuses a
		// connection whose server the sentinels stopped naming while it
		// was being made.
		fc := redis.NewFailoverClient(opts)
		r.primary = newPrimaryCheck(opts, r.log)
		fc.AddHook(r.primary)
		r.client, r.lay, r.mode = fc, singleLayout{prefix: cfg.Prefix}, "sentinel"
		addr = "sentinel " + opts.MasterName + "@" + strings.Join(opts.SentinelAddrs, ",")
		r.setScript(publishLua)
	default:
		opts, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return fmt.Errorf("redis url: %w", err)
		}
		opts.MaxRetries = 1
		if opts.Protocol == 0 {
			// RESP2 unless the URL asks (protocol=3): with RESP3, go-redis
			// checks for push notifications before every reply it reads,
			// which cost 7% of a node's CPU in the many-channels
			// benchmark, for notifications the engine does not use.
			opts.Protocol = 2
		}
		r.client, r.lay, addr, r.mode = redis.NewClient(opts), singleLayout{prefix: cfg.Prefix}, opts.Addr, "single"
		r.setScript(publishLua)
	}
	if err := r.client.Ping(ctx).Err(); err != nil {
		_ = r.closeClient()
		return fmt.Errorf("redis ping %s: %w", addr, err)
	}
	if r.cc != nil {
		// Every shard must answer, and the slots must be covered.
		err := r.cc.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error { return c.Ping(ctx).Err() })
		if err != nil {
			_ = r.closeClient()
			return fmt.Errorf("redis cluster %s: %w", addr, err)
		}
	}
	return nil
}

// closeClient closes the command client (and the pub/sub connections it
// made) and, in Sentinel mode, the primary check's sentinel clients.
func (r *Redis) closeClient() error {
	err := r.client.Close()
	if r.primary != nil {
		r.primary.close()
	}
	return err
}

// isRedirect reports a MOVED or ASK reply.
func isRedirect(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	return strings.HasPrefix(msg, "MOVED ") || strings.HasPrefix(msg, "ASK ")
}

// Backplane health: a PING every healthInterval, each bounded by
// healthTimeout, so that an outage and its end are known within about a
// second whatever the traffic (a node with no subscribed channel has no
// pub/sub traffic to tell it).
const (
	healthInterval = 500 * time.Millisecond
	healthTimeout  = time.Second
	// healthWarnEvery bounds the WARN lines of one outage.
	healthWarnEvery = 30 * time.Second
)

// Health is the state of the node's link to Redis.
type Health struct {
	Up    bool
	Since time.Time // when the link last changed state
	Err   error     // the last failure while down
	// PubSub is false while a pub/sub connection is being re-established
	// (deliveries resume, and are caught up from history, once it is).
	PubSub bool
}

// healthState is what watchHealth keeps.
type healthState struct {
	mu     sync.Mutex
	up     bool
	since  time.Time
	err    error
	warned time.Time
}

// Health reports whether Redis answered its last PING, since when, and
// whether every pub/sub connection is up.
func (r *Redis) Health() Health {
	r.health.mu.Lock()
	h := Health{Up: r.health.up, Since: r.health.since, Err: r.health.err}
	r.health.mu.Unlock()
	h.PubSub = r.Ready()
	return h
}

// watchHealth pings Redis until ctx ends, logging an outage at WARN when it
// starts (then at most every healthWarnEvery) and at INFO when it ends.
func (r *Redis) watchHealth(ctx context.Context) {
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, healthTimeout)
		err := r.client.Ping(pctx).Err()
		cancel()
		if ctx.Err() != nil || r.closed.Load() {
			return
		}
		r.noteHealth(err, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Redis) noteHealth(err error, now time.Time) {
	h := &r.health
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case err == nil && !h.up:
		down := now.Sub(h.since)
		h.up, h.since, h.err = true, now, nil
		r.log.Info("redis reachable again", "outage", down.Round(time.Millisecond).String())
	case err != nil && h.up:
		h.up, h.since, h.err, h.warned = false, now, err, now
		r.log.Warn("redis unreachable: publishes and subscribes fail until it answers; held connects and local deliveries continue", "err", err.Error())
	case err != nil:
		h.err = err
		if now.Sub(h.warned) >= healthWarnEvery {
			h.warned = now
			r.log.Warn("redis still unreachable", "for", now.Sub(h.since).Round(time.Second).String(), "err", err.Error())
		}
	}
}
