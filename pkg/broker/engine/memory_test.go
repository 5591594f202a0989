package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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

// recorder is a Handler that remembers what it was given.
type recorder struct {
	mu   sync.Mutex
	pubs []Publication
	gaps []string
}

func (r *recorder) OnPublication(p *Publication) {
	r.mu.Lock()
	r.pubs = append(r.pubs, *p)
	r.mu.Unlock()
}

func (r *recorder) OnGap(ch string, from, to Position) {
	r.mu.Lock()
	r.gaps = append(r.gaps, fmt.Sprintf("%s %v %v", ch, from, to))
	r.mu.Unlock()
}

// on returns the publications received on channel, in arrival order.
func (r *recorder) on(channel string) []Publication {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Publication
	for _, p := range r.pubs {
		if p.Channel == channel {
			out = append(out, p)
		}
	}
	return out
}

// startMemory returns a running engine whose handler is known to be
// registered (Run installs it asynchronously, so a probe channel is
// published until it arrives).
func startMemory(t *testing.T, cfg MemoryConfig) (*Memory, *recorder) {
	t.Helper()
	m := NewMemory(cfg)
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = m.Run(ctx, rec); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = m.Close()
	})
	const probe = "/probe"
	if err := m.Subscribe(ctx, probe); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "handler registration", func() bool {
		if _, err := m.Publish(ctx, probe, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		return len(rec.on(probe)) > 0
	})
	if err := m.Unsubscribe(ctx, probe); err != nil {
		t.Fatal(err)
	}
	return m, rec
}

func offsets(ps []Publication) []uint64 {
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

func TestMemoryOffsetsIncreasePerChannelFromOne(t *testing.T) {
	m := NewMemory(MemoryConfig{})
	t.Cleanup(func() { _ = m.Close() })
	ctx := context.Background()
	channels := []string{"/a", "/b", "/a/b"}
	epochs := map[string]string{}
	next := map[string]uint64{}
	for i := 0; i < 30; i++ {
		for _, ch := range channels {
			p, err := m.Publish(ctx, ch, []byte(fmt.Sprintf(`{"i":%d}`, i)))
			if err != nil {
				t.Fatalf("publish %s: %v", ch, err)
			}
			next[ch]++
			if p.Offset != next[ch] {
				t.Fatalf("%s publication %d: offset %d, want %d", ch, i, p.Offset, next[ch])
			}
			if p.Channel != ch {
				t.Fatalf("publication channel %q, want %q", p.Channel, ch)
			}
			if p.Epoch == "" {
				t.Fatalf("%s: empty epoch", ch)
			}
			if e, ok := epochs[ch]; ok && e != p.Epoch {
				t.Fatalf("%s: epoch changed from %q to %q", ch, e, p.Epoch)
			}
			epochs[ch] = p.Epoch
		}
	}
}

func TestMemoryDeliversOncePerMatchingPublication(t *testing.T) {
	tests := []struct {
		name     string
		patterns []string
		channel  string
		want     int
	}{
		{"concrete", []string{"/a/b"}, "/a/b", 1},
		{"concrete other", []string{"/a/c"}, "/a/b", 0},
		{"one level", []string{"/a/*"}, "/a/b", 1},
		{"one level too deep", []string{"/a/*"}, "/a/b/c", 0},
		{"one level parent itself", []string{"/a/*"}, "/a", 0},
		{"deep", []string{"/a/**"}, "/a/b/c", 1},
		{"deep direct child", []string{"/a/**"}, "/a/b", 1},
		{"deep parent itself", []string{"/a/**"}, "/a", 0},
		{"deep sibling prefix", []string{"/a/**"}, "/ab/c", 0},
		{"root deep", []string{"/**"}, "/x/y", 1},
		{"all matching at once", []string{"/a/b", "/a/*", "/a/**", "/**"}, "/a/b", 1},
		{"nothing subscribed", nil, "/a/b", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, rec := startMemory(t, MemoryConfig{})
			ctx := context.Background()
			for _, p := range tc.patterns {
				if err := m.Subscribe(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			const n = 3
			for i := 0; i < n; i++ {
				if _, err := m.Publish(ctx, tc.channel, []byte(`{}`)); err != nil {
					t.Fatal(err)
				}
			}
			// Memory delivers synchronously inside Publish.
			got := rec.on(tc.channel)
			if len(got) != tc.want*n {
				t.Fatalf("subscribed %v, published %d on %s: handler called %d times, want %d",
					tc.patterns, n, tc.channel, len(got), tc.want*n)
			}
			if tc.want == 1 && !slices.Equal(offsets(got), seq(1, n)) {
				t.Fatalf("offsets %v, want %v", offsets(got), seq(1, n))
			}
		})
	}
}

func TestMemoryNoDeliveryAfterUnsubscribe(t *testing.T) {
	m, rec := startMemory(t, MemoryConfig{})
	ctx := context.Background()
	for _, p := range []string{"/a/b", "/a/**"} {
		if err := m.Subscribe(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	pub := func() {
		t.Helper()
		if _, err := m.Publish(ctx, "/a/b", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	pub()
	if err := m.Unsubscribe(ctx, "/a/b"); err != nil {
		t.Fatal(err)
	}
	pub() // still matched by /a/**
	if err := m.Unsubscribe(ctx, "/a/**"); err != nil {
		t.Fatal(err)
	}
	pub()
	pub()
	if got := offsets(rec.on("/a/b")); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("delivered offsets %v, want [1 2] (nothing after the last Unsubscribe)", got)
	}
}

func TestMemoryConcurrentPublishersDeliverInOffsetOrder(t *testing.T) {
	m, rec := startMemory(t, MemoryConfig{HistorySize: 10})
	ctx := context.Background()
	const ch = "/race"
	if err := m.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	const publishers, each = 8, 250
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	returned := make(chan uint64, publishers*each)
	for g := 0; g < publishers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				p, err := m.Publish(ctx, ch, []byte(`{}`))
				if err != nil {
					errs <- err
					return
				}
				returned <- p.Offset
			}
		}()
	}
	wg.Wait()
	close(errs)
	close(returned)
	for err := range errs {
		t.Fatal(err)
	}
	const total = publishers * each
	got := offsets(rec.on(ch))
	if !slices.Equal(got, seq(1, total)) {
		for i := 1; i < len(got); i++ {
			if got[i] != got[i-1]+1 {
				t.Fatalf("handler saw offset %d after %d (index %d of %d)", got[i], got[i-1], i, len(got))
			}
		}
		t.Fatalf("handler saw %d publications, want offsets 1..%d", len(got), total)
	}
	var rets []uint64
	for o := range returned {
		rets = append(rets, o)
	}
	slices.Sort(rets)
	if !slices.Equal(rets, seq(1, total)) {
		t.Fatalf("Publish returned %d offsets that are not exactly 1..%d", len(rets), total)
	}
}

func TestMemoryHistory(t *testing.T) {
	m := NewMemory(MemoryConfig{HistorySize: 5})
	t.Cleanup(func() { _ = m.Close() })
	ctx := context.Background()
	const ch = "/h"
	var epoch string
	for i := 1; i <= 8; i++ { // retained: 4..8
		p, err := m.Publish(ctx, ch, []byte(fmt.Sprintf(`{"n":%d}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		epoch = p.Epoch
	}
	tests := []struct {
		name    string
		channel string
		after   Position
		limit   int
		want    []uint64
		wantErr error
	}{
		{"rest after a retained position", ch, Position{epoch, 3}, 0, seq(4, 8), nil},
		{"after the newest", ch, Position{epoch, 8}, 0, nil, nil},
		{"limit honoured", ch, Position{epoch, 4}, 2, []uint64{5, 6}, nil},
		{"limit larger than the rest", ch, Position{epoch, 6}, 10, []uint64{7, 8}, nil},
		{"older than the ring", ch, Position{epoch, 2}, 0, nil, ErrPositionGone},
		{"from the start, trimmed", ch, Position{epoch, 0}, 0, nil, ErrPositionGone},
		{"wrong epoch", ch, Position{"not-" + epoch, 5}, 0, nil, ErrPositionGone},
		{"unknown channel from 0", "/unknown", Position{}, 0, nil, nil},
		{"unknown channel, later position", "/unknown", Position{"e", 3}, 0, nil, ErrPositionGone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := m.History(ctx, tc.channel, tc.after, tc.limit)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("History(%s, %v, %d) error %v, want %v", tc.channel, tc.after, tc.limit, err, tc.wantErr)
			}
			if !slices.Equal(offsets(got), tc.want) {
				t.Fatalf("History(%s, %v, %d) = offsets %v, want %v", tc.channel, tc.after, tc.limit, offsets(got), tc.want)
			}
			for _, p := range got {
				if p.Epoch != epoch || p.Channel != ch || string(p.Payload) != fmt.Sprintf(`{"n":%d}`, p.Offset) {
					t.Fatalf("history entry %+v does not match what was published", p)
				}
			}
		})
	}
}

func TestMemoryIdleChannelGetsNewEpoch(t *testing.T) {
	m, _ := startMemory(t, MemoryConfig{IdleChannelTTL: 40 * time.Millisecond})
	ctx := context.Background()
	first, err := m.Publish(ctx, "/idle", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the idle channel to be forgotten", func() bool {
		_, err := m.History(ctx, "/idle", Position{first.Epoch, first.Offset}, 0)
		return errors.Is(err, ErrPositionGone)
	})
	again, err := m.Publish(ctx, "/idle", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if again.Epoch == first.Epoch || again.Offset != 1 {
		t.Fatalf("after idling: %s/%d, want a new epoch (old %s) at offset 1", again.Epoch, again.Offset, first.Epoch)
	}
}

func TestMemoryPublishErrors(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		close   bool
		wantErr error
	}{
		{"after Close", context.Background(), true, ErrClosed},
		{"cancelled context", cancelled, false, context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemory(MemoryConfig{})
			if _, err := m.Publish(context.Background(), "/c", []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			if tc.close {
				if err := m.Close(); err != nil {
					t.Fatal(err)
				}
			}
			p, err := m.Publish(tc.ctx, "/c", []byte(`{}`))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Publish = %+v, %v; want error %v", p, err, tc.wantErr)
			}
			if tc.close {
				return
			}
			// An error means not published: the failed call took no offset.
			h, err := m.History(context.Background(), "/c", Position{}, 0)
			if err != nil || !slices.Equal(offsets(h), []uint64{1}) {
				t.Fatalf("history after the failed publish: %v, %v; want offsets [1]", offsets(h), err)
			}
		})
	}
}

// Engine.Run's contract: it delivers "until ctx is done or Close is
// called", so Close must end Run even while its context is still live.
func TestMemoryRunReturnsAfterClose(t *testing.T) {
	m := NewMemory(MemoryConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // lets Run end (and the test stay leak-free) if Close does not
	done := make(chan struct{})
	go func() { _ = m.Run(ctx, &recorder{}); close(done) }()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(time.Second):
		cancel()
		<-done
		t.Fatal("Run did not return within 1s of Close (it returned only when its context was cancelled)")
	}
}

// TestMemoryPublishRacingSweepKeepsHistory: a publish that races the
// sweeper removing its idle channel lands in the channel History reads:
// either the old one (the publish came first, so the channel is no
// longer idle) or a new one (the sweep came first), never the removed one.
func TestMemoryPublishRacingSweepKeepsHistory(t *testing.T) {
	const ttl = time.Hour
	m := NewMemory(MemoryConfig{IdleChannelTTL: ttl})
	defer m.Close()
	ctx := context.Background()
	for i := range 3000 {
		name := fmt.Sprintf("/race/%d", i)
		if _, err := m.Publish(ctx, name, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		m.mu.RLock()
		ch := m.channels[name]
		m.mu.RUnlock()
		ch.mu.Lock()
		ch.last = time.Now().Add(-2 * ttl) // idle
		ch.mu.Unlock()
		var wg sync.WaitGroup
		var p Publication
		wg.Add(2)
		go func() { defer wg.Done(); p, _ = m.Publish(ctx, name, []byte(`{}`)) }()
		go func() { defer wg.Done(); m.sweep(time.Now()) }()
		wg.Wait()
		hist, err := m.History(ctx, name, Position{Epoch: p.Epoch, Offset: p.Offset - 1}, 0)
		if err != nil || len(hist) != 1 || hist[0].Offset != p.Offset {
			t.Fatalf("iteration %d: publication %s/%d missing from history: %v %v", i, p.Epoch, p.Offset, hist, err)
		}
	}
}
