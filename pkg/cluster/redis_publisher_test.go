package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

// publishConcurrently publishes n payloads {"w":i} at once, on channel
// name(i), and returns the publications (index i) and errors.
func publishConcurrently(e *Redis, n int, name func(i int) string, timeout time.Duration) ([]engine.Publication, []error) {
	pubs, errs := make([]engine.Publication, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			pubs[i], errs[i] = e.Publish(ctx, name(i), []byte(fmt.Sprintf(`{"w":%d}`, i)))
		}()
	}
	wg.Wait()
	return pubs, errs
}

// TestPublisherBatchesPublishesIntoPipelines: concurrent publishes go out
// in pipelines of at most the pipeline size; with a delay long enough to
// gather them, a full pipeline is sent without waiting for the delay.
// Every publish is acknowledged with its own offset, each channel's
// offsets are 1..k.
func TestPublisherBatchesPublishesIntoPipelines(t *testing.T) {
	rd := testproc.StartRedis(t)
	for _, tc := range []struct {
		name          string
		size, n       int
		wantPipelines uint64
	}{
		{"one pipeline", 50, 50, 1},
		{"bounded by size", 4, 20, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, rd.URL(), func(c *RedisConfig) {
				c.PipelineSize, c.PipelineDelay, c.Prefix = tc.size, 30*time.Second, "t"+fmt.Sprint(tc.size)
			})
			start := time.Now()
			pubs, errs := publishConcurrently(e, tc.n, func(i int) string { return fmt.Sprintf("/p/%d", i%5) }, 20*time.Second)
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Fatalf("full pipelines waited for the delay: %v", d)
			}
			if got := e.pub.pipelines.Load(); got != tc.wantPipelines {
				t.Fatalf("%d publishes in %d pipelines, want %d", tc.n, got, tc.wantPipelines)
			}
			perChannel := map[string][]uint64{}
			for _, p := range pubs {
				perChannel[p.Channel] = append(perChannel[p.Channel], p.Offset)
			}
			for ch, offs := range perChannel {
				slices.Sort(offs)
				if !slices.Equal(offs, seq(1, uint64(tc.n/5))) {
					t.Fatalf("%s: offsets %v, want 1..%d once each", ch, offs, tc.n/5)
				}
			}
		})
	}
}

// TestPublisherKeepsEachPublishersOrder: publishers that each publish in
// sequence on one shared channel, concurrently, see their offsets rise,
// and a subscribing node receives each publisher's messages in its order,
// every offset once.
func TestPublisherKeepsEachPublishersOrder(t *testing.T) {
	rd := testproc.StartRedis(t)
	a := newEngine(t, rd.URL(), func(c *RedisConfig) { c.PipelineSize = 8 })
	b := newEngine(t, rd.URL(), nil)
	recB := run(t, b)
	subscribe(t, b, "/o")
	const writers, each = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last uint64
			for n := range each {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				p, err := a.Publish(ctx, "/o", []byte(fmt.Sprintf(`{"w":%d,"n":%d}`, w, n)))
				cancel()
				if err != nil {
					errs <- err
					return
				}
				if p.Offset <= last {
					errs <- fmt.Errorf("writer %d: offset %d after %d", w, p.Offset, last)
					return
				}
				last = p.Offset
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := recB.waitPubs(t, "/o", writers*each)
	if !slices.Equal(offsets(got), seq(1, writers*each)) {
		t.Fatalf("delivered offsets %v, want 1..%d in order", offsets(got), writers*each)
	}
	next := make([]int, writers)
	for _, p := range got {
		var m struct{ W, N int }
		if err := json.Unmarshal(p.Payload, &m); err != nil {
			t.Fatal(err)
		}
		if m.N != next[m.W] {
			t.Fatalf("writer %d: message %d delivered when %d was due", m.W, m.N, next[m.W])
		}
		next[m.W]++
	}
	if a.pub.pipelines.Load() >= writers*each {
		t.Fatalf("%d publishes took %d pipelines: not batched", writers*each, a.pub.pipelines.Load())
	}
}

// TestPublisherFailedPublishIsNotSent: while Redis holds writes (CLIENT
// PAUSE), publishes whose context ends queued (or waiting for room in the
// full queue) fail and are never sent: the channel's offset counts exactly
// the acknowledged publishes once Redis resumes.
func TestPublisherFailedPublishIsNotSent(t *testing.T) {
	rd := testproc.StartRedis(t)
	e := newEngine(t, rd.URL(), func(c *RedisConfig) { c.PipelineSize = 2 }) // queue of 16
	ctl := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer ctl.Close()
	ctx := context.Background()
	if err := ctl.Do(ctx, "client", "pause", 1500, "write").Err(); err != nil {
		t.Fatal(err)
	}
	const n = 60
	_, errs := publishConcurrently(e, n, func(int) string { return "/f" }, 300*time.Millisecond)
	acked := 0
	for _, err := range errs {
		switch {
		case err == nil:
			acked++
		case !errors.Is(err, engine.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded):
			t.Fatalf("publish failed with %v, want ErrUnavailable wrapping the deadline", err)
		}
	}
	if acked == n {
		t.Fatal("every publish was acknowledged: Redis did not hold them")
	}
	// The publishes of the pipeline in flight during the pause are
	// acknowledged after it, whatever their callers' deadlines.
	t.Logf("%d of %d publishes acknowledged", acked, n)
	if acked == 0 {
		t.Fatal("no publish acknowledged: the pipeline in flight was lost")
	}
	if _, err := e.Publish(ctx, "/f", []byte(`{"last":true}`)); err != nil {
		t.Fatal(err)
	}
	head, err := e.Head(ctx, "/f")
	if err != nil {
		t.Fatal(err)
	}
	if int(head.Offset) != acked+1 {
		t.Fatalf("channel offset %d after %d acknowledged publishes and 1 more: a failed publish was sent", head.Offset, acked)
	}
}

// TestPublisherReloadsTheScriptInOrder: after SCRIPT FLUSH, a pipeline
// whose every EVALSHA fails NOSCRIPT is sent again with EVAL, in order.
func TestPublisherReloadsTheScriptInOrder(t *testing.T) {
	rd := testproc.StartRedis(t)
	e := newEngine(t, rd.URL(), func(c *RedisConfig) { c.PipelineSize, c.PipelineDelay = 20, 30*time.Second })
	if err := e.Client().ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	pubs, errs := publishConcurrently(e, 20, func(int) string { return "/s" }, 20*time.Second)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	offs := make([]uint64, len(pubs))
	for i, p := range pubs {
		offs[i] = p.Offset
	}
	slices.Sort(offs)
	if !slices.Equal(offs, seq(1, 20)) || e.pub.pipelines.Load() != 2 {
		t.Fatalf("offsets %v in %d pipelines, want 1..20 in 2 (EVALSHA, then EVAL)", offs, e.pub.pipelines.Load())
	}
}

func TestPublisherClosedFailsPublish(t *testing.T) {
	rd := testproc.StartRedis(t)
	e := newEngine(t, rd.URL(), nil)
	_ = e.Close()
	_, err := e.Publish(context.Background(), "/c", []byte(`{}`))
	if !errors.Is(err, engine.ErrUnavailable) || !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("publish after close: %v, want ErrUnavailable wrapping ErrClosed", err)
	}
}

// BenchmarkRedisPublish: acknowledged publishes per second through one
// engine on one Redis, from 1 and from 64 concurrent publishers (each
// awaiting its publish before the next, as a session does), 64 channels.
func BenchmarkRedisPublish(b *testing.B) {
	rd := testproc.StartRedis(b)
	for _, publishers := range []int{1, 64} {
		b.Run(fmt.Sprintf("publishers=%d", publishers), func(b *testing.B) {
			cfg := RedisConfig{URL: rd.URL(), Logger: quiet}
			ctx := context.Background()
			e, err := NewRedis(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			payload := []byte(`{"channel":"/bench/x","data":{"text":"a benchmark message of about one hundred bytes"},"id":"1"}`)
			var wg sync.WaitGroup
			var failed error
			var mu sync.Mutex
			b.ResetTimer()
			start := time.Now()
			for w := range publishers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ch := fmt.Sprintf("/bench/%d", w)
					for i := w; i < b.N; i += publishers {
						if _, err := e.Publish(ctx, ch, payload); err != nil {
							mu.Lock()
							failed = err
							mu.Unlock()
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
			if failed != nil {
				b.Fatal(failed)
			}
		})
	}
}

// TestPublisherNeverSendsAPublishTwice: a publish whose reply does not
// come within the read timeout (Redis, or the node, stalled) may still
// run; go-redis must not send it again on its own (it retries a failed
// pipeline unless told not to), or it runs twice: every subscriber gets
// it twice. The proxy delays every byte past the read timeout; the
// publish fails, and the stream holds it once when the delayed bytes
// have all landed.
func TestPublisherNeverSendsAPublishTwice(t *testing.T) {
	rd := testproc.StartRedis(t)
	px := testproc.StartFaultProxy(t, rd.Addr)
	const readTimeout, delay = 300 * time.Millisecond, time.Second
	e := newEngine(t, fmt.Sprintf("redis://%s?read_timeout=%s", px.Addr, readTimeout), nil)
	admin := redis.NewClient(&redis.Options{Addr: rd.Addr})
	t.Cleanup(func() { _ = admin.Close() })
	const ch = "/t/once"
	publish(t, e, ch, 1) // the script is loaded, the connections made
	px.Delay(delay)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.Publish(ctx, ch, []byte(`{"n":2}`)); err == nil {
		t.Fatalf("publish answered within %v through a proxy delaying %v", readTimeout, delay)
	}
	// Every attempt was written before Publish returned; each lands
	// delay after it was written.
	settled := time.Now().Add(delay + 500*time.Millisecond)
	key := e.lay.streamKey(ch)
	waitFor(t, 5*time.Second, "the delayed publish to run", func() bool {
		n, err := admin.XLen(ctx, key).Result()
		return err == nil && n >= 2
	})
	for time.Now().Before(settled) {
		if n, err := admin.XLen(ctx, key).Result(); err != nil || n != 2 {
			t.Fatalf("stream holds %d publications (err %v), want 2: the timed-out publish ran twice", n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
