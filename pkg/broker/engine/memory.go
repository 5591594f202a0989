package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
)

// MemoryConfig configures the in-memory engine.
type MemoryConfig struct {
	// HistorySize is the number of publications kept per channel (0: 1000).
	HistorySize int
	// HistoryTTL drops history older than this (0: 5 minutes).
	HistoryTTL time.Duration
	// Retention, if set, overrides HistorySize and HistoryTTL per channel
	// pattern.
	Retention *Retention
	// IdleChannelTTL forgets a channel's state (offset, history) after it
	// has had no publication for this long (0: 10 minutes). Its epoch
	// changes, so old positions become ErrPositionGone, never a silent gap.
	IdleChannelTTL time.Duration
}

// Memory is the embedded single-node engine. Publish calls the Handler
// synchronously while holding the channel's lock, so the order in which
// publications reach the Handler is their offset order.
type Memory struct {
	cfg MemoryConfig

	mu       sync.RWMutex
	channels map[string]*memChannel
	handler  Handler

	// subMu guards patterns. It is taken inside a channel's lock (Publish
	// decides interest while holding it, so a subscription either sees a
	// publication in history or gets it live, never neither) and never
	// the other way round.
	subMu    sync.RWMutex
	patterns map[string]int // subscribed patterns (refcount for robustness)
	closed   bool
	done     chan struct{} // closed by Close
}

var _ Engine = (*Memory)(nil)

type memChannel struct {
	mu      sync.Mutex
	epoch   string
	offset  uint64
	ring    []memEntry // circular, len == cap once full
	start   int        // index of oldest entry
	last    time.Time
	history int           // publications kept
	ttl     time.Duration // age limit of history
	// removed is set (under mu) when sweep drops the channel from the
	// map: a publish that looked it up before must start a new one.
	removed bool
}

type memEntry struct {
	pub Publication
	at  time.Time
}

// NewMemory returns an in-memory engine.
func NewMemory(cfg MemoryConfig) *Memory {
	if cfg.HistorySize <= 0 {
		cfg.HistorySize = 1000
	}
	if cfg.HistoryTTL <= 0 {
		cfg.HistoryTTL = 5 * time.Minute
	}
	if cfg.IdleChannelTTL <= 0 {
		cfg.IdleChannelTTL = 10 * time.Minute
	}
	if cfg.Retention == nil {
		cfg.Retention = DefaultRetention(cfg.HistorySize, cfg.HistoryTTL)
	}
	return &Memory{cfg: cfg, done: make(chan struct{}), channels: map[string]*memChannel{}, patterns: map[string]int{}}
}

func newEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Publish implements Engine.
func (m *Memory) Publish(ctx context.Context, name string, payload []byte) (Publication, error) {
	if err := ctx.Err(); err != nil {
		return Publication{}, fmt.Errorf("memory publish: %w", err)
	}
	// Lock order: m.mu is never taken while holding ch.mu (sweep takes
	// m.mu then ch.mu), so read the handler first.
	m.mu.RLock()
	closed, h := m.closed, m.handler
	m.mu.RUnlock()
	if closed {
		return Publication{}, ErrClosed
	}
	ch := m.lockChannel(name)
	defer ch.mu.Unlock()
	now := time.Now()
	interested := h != nil && m.matches(name)
	ch.offset++
	ch.last = now
	p := Publication{Channel: name, Epoch: ch.epoch, Offset: ch.offset, Payload: payload, Time: now.UnixMilli()}
	ch.append(memEntry{pub: p, at: now})
	if interested {
		h.OnPublication(&p)
	}
	return p, nil
}

// lockChannel returns name's channel, created if needed, with its mu held.
// A channel the sweeper removed between the lookup and the lock is not
// used (what was appended to it would be missing from history): the
// lookup is retried, and finds or creates the channel in the map.
func (m *Memory) lockChannel(name string) *memChannel {
	for {
		m.mu.RLock()
		ch := m.channels[name]
		m.mu.RUnlock()
		if ch == nil {
			m.mu.Lock()
			if ch = m.channels[name]; ch == nil {
				size, ttl := m.cfg.Retention.For(name)
				ch = &memChannel{epoch: newEpoch(), history: size, ttl: ttl}
				m.channels[name] = ch
			}
			m.mu.Unlock()
		}
		ch.mu.Lock()
		if !ch.removed {
			return ch
		}
		ch.mu.Unlock()
	}
}

func (c *memChannel) append(e memEntry) {
	if len(c.ring) < c.history {
		c.ring = append(c.ring, e)
		return
	}
	c.ring[c.start] = e
	c.start = (c.start + 1) % len(c.ring)
}

func (m *Memory) matches(name string) bool {
	m.subMu.RLock()
	defer m.subMu.RUnlock()
	if len(m.patterns) == 0 {
		return false
	}
	var buf [channel.MaxDepth + 2]string
	for _, p := range channel.Candidates(buf[:0], name) {
		if m.patterns[p] > 0 {
			return true
		}
	}
	return false
}

// Subscribe implements Engine.
func (m *Memory) Subscribe(_ context.Context, pattern string) error {
	m.subMu.Lock()
	defer m.subMu.Unlock()
	m.patterns[pattern]++
	return nil
}

// Unsubscribe implements Engine.
func (m *Memory) Unsubscribe(_ context.Context, pattern string) error {
	m.subMu.Lock()
	defer m.subMu.Unlock()
	if m.patterns[pattern] <= 1 {
		delete(m.patterns, pattern)
	} else {
		m.patterns[pattern]--
	}
	return nil
}

// History implements Engine.
func (m *Memory) History(_ context.Context, name string, after Position, limit int) ([]Publication, error) {
	m.mu.RLock()
	ch := m.channels[name]
	m.mu.RUnlock()
	if ch == nil {
		if after.Offset == 0 {
			return nil, nil
		}
		return nil, ErrPositionGone
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	retained := after == Retained
	if retained {
		after = Position{}
	}
	if after.Epoch != "" && after.Epoch != ch.epoch {
		return nil, ErrPositionGone
	}
	cutoff := time.Now().Add(-ch.ttl)
	n := len(ch.ring)
	var out []Publication
	oldest := uint64(0)
	for i := 0; i < n; i++ {
		e := ch.ring[(ch.start+i)%n]
		if e.at.Before(cutoff) {
			continue
		}
		if oldest == 0 {
			oldest = e.pub.Offset
		}
		if e.pub.Offset > after.Offset {
			out = append(out, e.pub)
			if limit > 0 && len(out) == limit {
				break
			}
		}
	}
	// The caller has everything up to after.Offset; the next it needs is
	// after.Offset+1, which must still be retained (or not yet exist).
	if !retained && after.Offset < ch.offset && (oldest == 0 || oldest > after.Offset+1) {
		return nil, ErrPositionGone
	}
	return out, nil
}

// Head implements Engine.
func (m *Memory) Head(_ context.Context, name string) (Position, error) {
	m.mu.RLock()
	ch := m.channels[name]
	m.mu.RUnlock()
	if ch == nil {
		return Position{}, nil
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return Position{Epoch: ch.epoch, Offset: ch.offset}, nil
}

// Channels implements Engine.
func (m *Memory) Channels(_ context.Context, pattern string) ([]string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []string
	for name := range m.channels {
		if channel.Match(pattern, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// SetHandler registers h before Run, so that publications made between
// the broker's creation and its Run goroutine starting reach it.
func (m *Memory) SetHandler(h Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.handler = h
}

// Run implements Engine: it registers h and sweeps idle channels until ctx
// is done or Close is called.
func (m *Memory) Run(ctx context.Context, h Handler) error {
	m.mu.Lock()
	m.handler = h
	m.mu.Unlock()
	t := time.NewTicker(m.cfg.IdleChannelTTL / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.done:
			return nil
		case now := <-t.C:
			m.sweep(now)
		}
	}
}

func (m *Memory) sweep(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, ch := range m.channels {
		ch.mu.Lock()
		idle := now.Sub(ch.last) > m.cfg.IdleChannelTTL
		if idle {
			ch.removed = true
			delete(m.channels, name)
		}
		ch.mu.Unlock()
	}
}

// Close implements Engine.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		close(m.done)
	}
	return nil
}
