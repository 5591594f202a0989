package cluster

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/tracing"
)

// TestRedisEnvelopeTraceContext reads the pub/sub envelope as Redis carries
// it: with tracing off it is exactly "epoch offset ms channel\npayload";
// with tracing on the Redis publish span's traceparent comes before the
// channel, and the receiving engine's fan-out span is that span's child.
// Either way the receiver delivers the same publication.
func TestRedisEnvelopeTraceContext(t *testing.T) {
	rd := testproc.StartRedis(t)
	for _, tc := range []struct {
		name   string
		traced bool
		want   string // envelope pattern; TRACEPARENT is the Redis span's
	}{
		{"off", false, `^[0-9a-f]{12} 1 [0-9]{13} /env/x\n\{"n":0\}$`},
		{"on", true, `^[0-9a-f]{12} 1 [0-9]{13} TRACEPARENT /env/x\n\{"n":0\}$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			var tr *tracing.Tracer
			if tc.traced {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
				t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				tr = tracing.New(tp)
			}
			prefix := "env" + tc.name
			pub := newEngine(t, rd.URL(), func(c *RedisConfig) { c.Prefix, c.Tracer = prefix, tr })
			sub := newEngine(t, rd.URL(), func(c *RedisConfig) { c.Prefix, c.Tracer = prefix, tr })
			got := run(t, sub)
			subscribe(t, sub, "/env/x")

			raw := redis.NewClient(&redis.Options{Addr: rd.Addr})
			t.Cleanup(func() { _ = raw.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ps := raw.Subscribe(ctx, prefix+":s:/env/x")
			t.Cleanup(func() { _ = ps.Close() })
			if _, err := ps.Receive(ctx); err != nil { // the subscription's confirmation
				t.Fatal(err)
			}

			sent := publish(t, pub, "/env/x", 1)[0]
			msg, err := ps.ReceiveMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			p := got.waitPubs(t, "/env/x", 1)[0]
			if p.Epoch != sent.Epoch || p.Offset != 1 || string(p.Payload) != `{"n":0}` {
				t.Fatalf("delivered %+v, published %+v", p, sent)
			}

			want := tc.want
			if tc.traced {
				waitFor(t, 5*time.Second, "the fan-out span", func() bool { return len(rec.Ended()) == 2 })
				redisSpan, fanout := rec.Ended()[0], rec.Ended()[1]
				if redisSpan.Name() == tracing.SpanFanout { // either may end first
					redisSpan, fanout = fanout, redisSpan
				}
				sc := redisSpan.SpanContext()
				want = regexp.MustCompile("TRACEPARENT").ReplaceAllLiteralString(want,
					"00-"+sc.TraceID().String()+"-"+sc.SpanID().String()+"-01")
				if redisSpan.Name() != tracing.SpanRedisPublish || fanout.Name() != tracing.SpanFanout ||
					fanout.Parent().SpanID() != sc.SpanID() || fanout.Parent().TraceID() != sc.TraceID() {
					t.Errorf("spans %q %v, %q parent %v: want the fan-out the Redis span's child",
						redisSpan.Name(), sc, fanout.Name(), fanout.Parent())
				}
			}
			if !regexp.MustCompile(want).MatchString(msg.Payload) {
				t.Errorf("envelope %q, want %s", msg.Payload, want)
			}
		})
	}
}
