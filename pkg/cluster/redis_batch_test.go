package cluster

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

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
	ctx := context.Background()
	receiveAll(ctx, rd, h, msgs) // start tracking the channels
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, t := range rd.tracked {
			t.offset = 0 // the same envelopes are new again
		}
		receiveAll(ctx, rd, h, msgs)
	}
	b.StopTimer()
	if want := (b.N + 1) * n; h.pubs != want || h.gaps != 0 {
		b.Fatalf("%d publications and %d gaps delivered, want %d and none", h.pubs, h.gaps, want)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
	b.ReportMetric(float64(h.batches)/float64(b.N+1), "handler-calls/op")
}

// receiveAll hands msgs to rd as its pub/sub connection would have read
// them.
func receiveAll(ctx context.Context, rd *reader, h engine.Handler, msgs []any) {
	for _, m := range msgs {
		rd.onMessage(ctx, h, m.(*redis.Message).Payload)
	}
}
