package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

// waitFor polls cond until it holds or d elapses.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	bayeuxtest.Eventually(t, d, func() error {
		if cond() {
			return nil
		}
		return errors.New("waiting for " + what)
	})
}

// event is one Handler call: a publication, or a gap when pub is nil.
type event struct {
	pub      *engine.Publication
	channel  string // gap channel (or pattern)
	from, to engine.Position
}

func (e event) String() string {
	if e.pub != nil {
		return fmt.Sprintf("pub %s %s/%d", e.pub.Channel, e.pub.Epoch, e.pub.Offset)
	}
	return fmt.Sprintf("gap %s (%v, %v]", e.channel, e.from, e.to)
}

// recorder is an engine.Handler that keeps every call in order.
type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) OnPublication(p *engine.Publication) {
	cp := *p
	r.mu.Lock()
	r.events = append(r.events, event{pub: &cp})
	r.mu.Unlock()
}

func (r *recorder) OnGap(ch string, from, to engine.Position) {
	r.mu.Lock()
	r.events = append(r.events, event{channel: ch, from: from, to: to})
	r.mu.Unlock()
}

// pubs returns the publications delivered on channel, in delivery order.
func (r *recorder) pubs(channel string) []engine.Publication {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []engine.Publication
	for _, e := range r.events {
		if e.pub != nil && e.pub.Channel == channel {
			out = append(out, *e.pub)
		}
	}
	return out
}

// gaps returns the gaps reported for channel (a channel or a pattern).
func (r *recorder) gaps(channel string) []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []event
	for _, e := range r.events {
		if e.pub == nil && e.channel == channel {
			out = append(out, e)
		}
	}
	return out
}

func (r *recorder) all() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.events...)
}

// waitPubs waits until at least n publications were delivered on channel
// and returns them.
func (r *recorder) waitPubs(t *testing.T, channel string, n int) []engine.Publication {
	t.Helper()
	var got []engine.Publication
	waitFor(t, 5*time.Second, fmt.Sprintf("%d publications on %s", n, channel), func() bool {
		got = r.pubs(channel)
		return len(got) >= n
	})
	return got
}

func offsets(ps []engine.Publication) []uint64 {
	out := make([]uint64, len(ps))
	for i, p := range ps {
		out[i] = p.Offset
	}
	return out
}

func seq(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// newEngine connects a Redis engine to url; mutate adjusts its config.
func newEngine(t *testing.T, url string, mutate func(*RedisConfig)) *Redis {
	t.Helper()
	cfg := RedisConfig{URL: url, Logger: quiet}
	if mutate != nil {
		mutate(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := NewRedis(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// run starts e.Run with a recorder until the test ends.
func run(t *testing.T, e *Redis) *recorder {
	t.Helper()
	rec := &recorder{}
	runWith(t, e, rec)
	return rec
}

// runWith starts e.Run with h until the test ends.
func runWith(t *testing.T, e *Redis, h engine.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.Run(ctx, h); close(done) }()
	t.Cleanup(func() {
		cancel()
		_ = e.Close() // Run's blocking read does not watch ctx; Close ends it
		<-done
	})
}

func subscribe(t *testing.T, e *Redis, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := e.Subscribe(ctx, p)
		cancel()
		if err != nil {
			t.Fatalf("subscribe %s: %v", p, err)
		}
	}
}

// publish publishes n payloads {"n":i} on channel and returns them.
func publish(t *testing.T, e *Redis, channel string, n int) []engine.Publication {
	t.Helper()
	out := make([]engine.Publication, 0, n)
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		p, err := e.Publish(ctx, channel, []byte(fmt.Sprintf(`{"n":%d}`, i)))
		cancel()
		if err != nil {
			t.Fatalf("publish %s #%d: %v", channel, i, err)
		}
		out = append(out, p)
	}
	return out
}
