package tracing

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"
)

// TestOffCostsNothing: the nil Tracer's hooks allocate nothing.
func TestOffCostsNothing(t *testing.T) {
	var tr *Tracer
	if tr.Provider() != nil {
		t.Fatal("a provider with tracing off")
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"Publish", func() { c, s := tr.Publish(ctx, "/a"); _ = c; s.End() }},
		{"RedisPublish", func() { _, s := tr.RedisPublish(ctx, "/a"); Published(s, 1, nil); s.End() }},
		{"TraceParent", func() {
			if tr.TraceParent(ctx) != "" {
				t.Error("traceparent with tracing off")
			}
		}},
		{"Fanout", func() { tr.Fanout("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "/a", 1).End() }},
	} {
		if n := testing.AllocsPerRun(100, tc.f); n != 0 {
			t.Errorf("%s with tracing off: %v allocations, want 0", tc.name, n)
		}
	}
}

// TestSpanChain: publish, Redis publish and a fan-out started from the
// traceparent the Redis span gives make one trace, each the previous one's
// child; an error is recorded on the Redis span.
func TestSpanChain(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tr := New(tp)
	ctx, pub := tr.Publish(context.Background(), "/c")
	rctx, rs := tr.RedisPublish(ctx, "/c")
	tp1 := tr.TraceParent(rctx)
	Published(rs, 7, nil)
	rs.End()
	pub.End()
	tr.Fanout(tp1, "/c", 7).End()
	tr.Fanout("", "/c", 8).End() // from a node not tracing: a root span
	_, failed := tr.RedisPublish(context.Background(), "/c")
	Published(failed, 0, errors.New("redis down"))
	failed.End()

	s := rec.Ended()
	if len(s) != 5 {
		t.Fatalf("%d spans, want 5", len(s))
	}
	redisSpan, publish, fanout, root, bad := s[0], s[1], s[2], s[3], s[4]
	if redisSpan.Parent().SpanID() != publish.SpanContext().SpanID() ||
		fanout.Parent().SpanID() != redisSpan.SpanContext().SpanID() ||
		fanout.SpanContext().TraceID() != publish.SpanContext().TraceID() || !fanout.Parent().IsRemote() {
		t.Errorf("not one chain: publish %v, redis %v (parent %v), fanout parent %v",
			publish.SpanContext(), redisSpan.SpanContext(), redisSpan.Parent(), fanout.Parent())
	}
	if root.Parent().IsValid() {
		t.Errorf("fan-out without traceparent has parent %v", root.Parent())
	}
	if bad.Status().Description != "redis down" || len(bad.Events()) != 1 {
		t.Errorf("failed publish: status %v, events %v", bad.Status(), bad.Events())
	}
	for _, sp := range s[:3] {
		if got := attrString(sp, AttrChannel); got != "/c" {
			t.Errorf("%s: channel %q", sp.Name(), got)
		}
	}
}

func attrString(s sdktrace.ReadOnlySpan, k attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == k {
			return kv.Value.AsString()
		}
	}
	return ""
}

// BenchmarkPublishHook is the publish hooks' cost per publish (publish
// span, Redis span, traceparent): off (the nil Tracer), through the
// OpenTelemetry no-op provider, and on (SDK, sampled, no span processor:
// the cost of making the spans, not of exporting them).
func BenchmarkPublishHook(b *testing.B) {
	on := sdktrace.NewTracerProvider()
	defer func() { _ = on.Shutdown(context.Background()) }()
	for _, bc := range []struct {
		name string
		tr   *Tracer
	}{
		{"off", nil},
		{"noop-provider", New(noop.NewTracerProvider())},
		{"on", New(on)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				c, s := bc.tr.Publish(ctx, "/bench/room")
				c, r := bc.tr.RedisPublish(c, "/bench/room")
				_ = bc.tr.TraceParent(c)
				Published(r, 1, nil)
				r.End()
				s.End()
			}
		})
	}
}
