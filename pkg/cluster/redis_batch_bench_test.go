package cluster

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

// countHandler counts what it is handed, one by one or in batches.
type countHandler struct{ pubs, batches, gaps int }

func (c *countHandler) OnPublication(*engine.Publication) { c.pubs++; c.batches++ }
func (c *countHandler) OnPublications(ps []*engine.Publication) {
	c.pubs += len(ps)
	c.batches++
}
func (c *countHandler) OnGap(string, engine.Position, engine.Position) { c.gaps++ }

// benchEnvelopes returns n pub/sub messages as go-redis hands them over:
// offsets 1.. in turn on four channels, each a Bayeux message of about
// 120 bytes.
func benchEnvelopes(n int) []any {
	out := make([]any, n)
	for i := range out {
		ch := fmt.Sprintf("/bench/room/%d", i%4)
		payload := fmt.Sprintf(`{"channel":%q,"data":{"user":"alice","text":"hello, world","ts":1700000000000,"n":%d},"id":"%d"}`, ch, i, i)
		out[i] = &redis.Message{Channel: "{0}" + ch, Payload: fmt.Sprintf("e1 %d 1700000000000 %s\n%s", i/4+1, ch, payload)}
	}
	return out
}

// BenchmarkReceiveBatch measures the receive path of a node from what the
// pub/sub connection has read to the broker's handler: 256 buffered
// messages on four channels are decoded, checked against each channel's
// position and delivered. One op is the 256 messages.
func BenchmarkReceiveBatch(b *testing.B) {
	const n = 256
	e := &Redis{cfg: RedisConfig{Logger: quiet}, log: quiet}
	rd := newReader(e, 0)
	msgs := benchEnvelopes(n)
	h := &countHandler{}
	out := newBatchOut(h, false)
	ctx := context.Background()
	rd.deliver(ctx, out, msgs) // start tracking the channels
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, t := range rd.tracked {
			t.offset = 0 // the same envelopes are new again
		}
		rd.deliver(ctx, out, msgs)
	}
	b.StopTimer()
	if want := (b.N + 1) * n; h.pubs != want || h.gaps != 0 {
		b.Fatalf("%d publications and %d gaps delivered, want %d and none", h.pubs, h.gaps, want)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
	b.ReportMetric(float64(h.batches)/float64(b.N+1), "handler-calls/op")
}

// handlerOf is the Redis engine that hands the broker's handler to got
// when the broker starts it.
type handlerOf struct {
	*Redis
	got chan engine.Handler
}

func (e handlerOf) Run(ctx context.Context, h engine.Handler) error {
	e.got <- h
	return e.Redis.Run(ctx, h)
}

// oneByOne hides a handler's OnPublications: the engine then delivers
// each publication on its own, as before batching.
type oneByOne struct{ engine.Handler }

// BenchmarkReceiveBatchWebSocket measures the same 256 buffered messages
// delivered through a real broker to websocket subscribers (a quarter per
// channel, clients in this process reading every frame), as one batch or
// one by one. One op is the 256 messages (64 per subscriber); frames/op
// counts the websocket frames the clients read. Beyond 256 sockets, the
// ones whose writer does not linger are written from the delivering
// goroutine, one frame per wake-up.
func BenchmarkReceiveBatchWebSocket(b *testing.B) {
	for _, clients := range []int{100, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", clients), func(b *testing.B) { benchReceiveWebSocket(b, clients) })
	}
}

func benchReceiveWebSocket(b *testing.B, clients int) {
	const n = 256
	rs := testproc.StartRedis(b)
	e, err := NewRedis(context.Background(), RedisConfig{URL: rs.URL(), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	eng := handlerOf{e, make(chan engine.Handler, 1)}
	br, err := broker.New(broker.Config{Engine: eng, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = br.Run(ctx); close(done) }()
	srv := httptest.NewServer(br)
	b.Cleanup(func() {
		srv.Close()
		cancel()
		_ = e.Close()
		<-done
	})
	h := <-eng.got
	var frames, msgs atomic.Int64
	reached := make(chan struct{}, 1)
	var target atomic.Int64
	for i := range clients {
		ws := dialWS(b, srv.URL)
		ws.send(`[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}]`)
		id, _ := ws.recv()[0]["clientId"].(string)
		ws.send(fmt.Sprintf(`[{"channel":"/meta/subscribe","clientId":%q,"subscription":"/bench/room/%d"},{"channel":"/meta/connect","clientId":%q,"connectionType":"websocket"}]`, id, i%4, id))
		if r := ws.recv(); len(r) != 2 || r[0]["successful"] != true {
			b.Fatalf("subscribe and first connect: %v", r)
		}
		connect := []byte(fmt.Sprintf(`[{"channel":"/meta/connect","clientId":%q,"connectionType":"websocket"}]`, id))
		ws.send(string(connect))
		go func() {
			for {
				_, f, err := ws.c.Read(context.Background())
				if err != nil {
					return
				}
				if bytes.Contains(f, []byte(`"/meta/connect"`)) { // the held connect's answer: hold the next
					_ = ws.c.Write(context.Background(), websocket.MessageText, connect)
				}
				frames.Add(1)
				if msgs.Add(int64(bytes.Count(f, []byte(`{"channel":"/bench/`)))) >= target.Load() {
					signal(reached)
				}
			}
		}()
	}
	for _, mode := range []struct {
		name string
		h    engine.Handler
	}{{"batch", h}, {"one-by-one", oneByOne{h}}} {
		b.Run(mode.name, func(b *testing.B) {
			rd := newReader(e, 0)
			out := newBatchOut(mode.h, false)
			envs := benchEnvelopes(n)
			deliver := func() {
				for _, t := range rd.tracked {
					t.offset = 0
				}
				target.Add(int64(n * clients / 4))
				rd.deliver(ctx, out, envs)
				for msgs.Load() < target.Load() {
					select {
					case <-reached:
					case <-time.After(10 * time.Second):
						b.Fatalf("%d of %d deliveries read", msgs.Load(), target.Load())
					}
				}
			}
			deliver()
			f0 := frames.Load()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				deliver()
			}
			b.StopTimer()
			b.ReportMetric(float64(frames.Load()-f0)/float64(b.N), "frames/op")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n*clients/4), "ns/delivery")
		})
	}
}

// BenchmarkPubSubReceive measures go-redis reading 256 buffered pub/sub
// messages (150-byte envelopes) off a real Redis connection with
// ReceiveTimeout, as the pump does: what a reader of our own could save.
// Publishing them (a pipeline from another connection) is outside the
// timer and the allocation count.
func BenchmarkPubSubReceive(b *testing.B) {
	const n = 256
	rs := testproc.StartRedis(b)
	ctx := context.Background()
	sub := redis.NewClient(&redis.Options{Addr: rs.Addr, Protocol: 2})
	pub := redis.NewClient(&redis.Options{Addr: rs.Addr, Protocol: 2})
	b.Cleanup(func() { _ = sub.Close(); _ = pub.Close() })
	ps := sub.Subscribe(ctx, "{0}/bench/room/0")
	if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil { // the confirmation
		b.Fatal(err)
	}
	envs := benchEnvelopes(n)
	publish := func() {
		p := pub.Pipeline()
		for _, m := range envs {
			p.Publish(ctx, "{0}/bench/room/0", m.(*redis.Message).Payload)
		}
		if _, err := p.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		publish()
		b.StartTimer()
		for range n {
			if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
}
