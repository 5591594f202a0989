package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// BenchmarkDecodeBatch decodes one request of 10 typical messages: a
// connect, a subscribe and eight publishes with small JSON objects.
func BenchmarkDecodeBatch(b *testing.B) {
	const id = "abcdefghijklmnopqrstuvwxyz"
	parts := []string{
		`{"channel":"/meta/connect","clientId":"` + id + `","connectionType":"long-polling","id":"10","ext":{"ack":3}}`,
		`{"channel":"/meta/subscribe","clientId":"` + id + `","subscription":["/chat/room/1","/chat/room/2/*"],"id":"11"}`,
	}
	for i := range 8 {
		parts = append(parts, fmt.Sprintf(`{"channel":"/chat/room/%d","clientId":"%s","data":{"user":"alice","text":"hello, world %d","ts":1700000000%03d},"id":"%d"}`, i, id, i, i, 12+i))
	}
	body := []byte("[" + strings.Join(parts, ",") + "]")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		msgs, err := protocol.Decode(body, protocol.Limits{})
		if err != nil || len(msgs) != 10 || msgs[9].Invalid != nil {
			b.Fatalf("decode: %v %v", err, msgs)
		}
	}
}

// benchBroker returns a running broker whose sessions neither expire nor
// overflow during a benchmark.
func benchBroker(b *testing.B, maxQueue int) *Broker {
	b.Helper()
	br, err := New(Config{
		Logger:           slog.New(slog.DiscardHandler),
		MaxInterval:      time.Hour,
		SweepInterval:    time.Hour,
		MaxQueueMessages: maxQueue,
		MaxQueueBytes:    1 << 30,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = br.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return br
}

// benchSession creates a session through a handshake request, as a
// transport would.
func benchSession(b *testing.B, br *Broker) *Session {
	b.Helper()
	res := br.process(context.Background(), &request{
		info: RequestInfo{Transport: protocol.LongPolling},
		msgs: []*protocol.Message{{
			Channel: protocol.ChannelHandshake, Version: protocol.Version,
			SupportedConnectionTypes: []string{protocol.LongPolling},
		}},
		received: time.Now(),
	})
	if res.session == nil {
		b.Fatalf("handshake failed: %+v", res.replies[0])
	}
	return res.session
}

func benchDrain(sessions []*Session, buf []*engine.Publication) []*engine.Publication {
	for _, s := range sessions {
		buf = s.takePushed(buf[:0])
		clear(buf)
	}
	return buf
}

// BenchmarkPublishFanout measures one Broker.Publish on the memory engine
// reaching n local sessions subscribed to the channel: the payload is
// encoded once and its pointer enqueued n times. Queues are drained with the
// timer stopped.
func BenchmarkPublishFanout(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			drainEvery := max(64, 65536/n)
			br := benchBroker(b, drainEvery+16)
			ctx := context.Background()
			const ch = "/bench/fanout/room"
			sessions := make([]*Session, n)
			for i := range sessions {
				sessions[i] = benchSession(b, br)
				if err := br.idx.add(ctx, sessions[i], ch); err != nil {
					b.Fatal(err)
				}
			}
			data := json.RawMessage(`{"user":"alice","text":"hello, world","ts":1700000000000}`)
			// Run registers the engine handler asynchronously: publish
			// until the fan-out is live.
			deadline := time.Now().Add(5 * time.Second)
			for sessions[0].QueueLen() == 0 {
				if time.Now().After(deadline) {
					b.Fatal("engine handler never registered")
				}
				if _, err := br.Publish(ctx, ch, data); err != nil {
					b.Fatal(err)
				}
			}
			buf := benchDrain(sessions, nil)
			// Warm up: grow every queue to its steady-state capacity, so
			// the figures are per publish, not amortized slice growth.
			for range drainEvery {
				if _, err := br.Publish(ctx, ch, data); err != nil {
					b.Fatal(err)
				}
			}
			buf = benchDrain(sessions, buf)
			before := br.Stats().Deliveries
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := br.Publish(ctx, ch, data); err != nil {
					b.Fatal(err)
				}
				if (i+1)%drainEvery == 0 {
					b.StopTimer()
					buf = benchDrain(sessions, buf)
					b.StartTimer()
				}
			}
			b.StopTimer()
			st := br.Stats()
			if got, want := st.Deliveries-before, int64(b.N)*int64(n); got != want || st.QueueOverflows != 0 {
				b.Fatalf("deliveries %d, want %d (overflows %d)", got, want, st.QueueOverflows)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(int64(b.N)*int64(n)), "ns/delivery")
		})
	}
}

// BenchmarkSubIndexFanout10k matches a publication against an index of
// 10,000 distinct patterns (concrete, /* and /**), one session each, of
// which 5 match: the cost must not depend on the index size.
func BenchmarkSubIndexFanout10k(b *testing.B) {
	const drainEvery = 4096
	br, err := New(Config{Logger: slog.New(slog.DiscardHandler), MaxQueueMessages: drainEvery + 16})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	matching := []string{"/room/42/msg", "/room/42/*", "/room/42/**", "/room/**", "/**"}
	patterns := append([]string(nil), matching...)
	for i := 0; len(patterns) < 10000; i++ {
		id := 1000 + i
		switch i % 4 {
		case 0:
			patterns = append(patterns, fmt.Sprintf("/room/%d/msg", id))
		case 1:
			patterns = append(patterns, fmt.Sprintf("/room/%d/*", id))
		case 2:
			patterns = append(patterns, fmt.Sprintf("/room/%d/**", id))
		case 3:
			patterns = append(patterns, fmt.Sprintf("/room/%d/msg/thread/%d", id, i))
		}
	}
	var hit []*Session
	for i, p := range patterns {
		s := newSession(br, RequestInfo{Transport: protocol.LongPolling}, "")
		if err := br.idx.add(ctx, s, p); err != nil {
			b.Fatal(err)
		}
		if i < len(matching) {
			hit = append(hit, s)
		}
	}
	if got := br.idx.patterns(); got != 10000 {
		b.Fatalf("index has %d patterns, want 10000", got)
	}
	p := &engine.Publication{Channel: "/room/42/msg", Payload: protocol.AppendPublication(nil, "/room/42/msg", json.RawMessage(`{"x":1}`), nil, nil)}
	var buf []*engine.Publication
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if n := br.idx.fanout(p, withReplayID); n != len(matching) {
			b.Fatalf("fanout reached %d sessions, want %d", n, len(matching))
		}
		if (i+1)%drainEvery == 0 {
			b.StopTimer()
			buf = benchDrain(hit, buf)
			b.StartTimer()
		}
	}
}
