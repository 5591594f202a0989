package tracing

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// instrumentation is the tracer's (instrumentation scope's) name.
const instrumentation = "github.com/bayeux-cluster/bayeux"

// Span names and attribute keys.
const (
	SpanPublish      = "bayeux publish"
	SpanRedisPublish = "redis publish"
	SpanFanout       = "bayeux fanout"
	SpanForward      = "bayeux forward"

	// AttrChannel is the Bayeux channel of a publication.
	AttrChannel = attribute.Key("bayeux.channel")
	// AttrOffset is the publication's offset in its channel.
	AttrOffset = attribute.Key("bayeux.offset")
)

// Tracer starts the project's spans. The nil *Tracer is tracing off: its
// methods do nothing and allocate nothing.
type Tracer struct {
	tp trace.TracerProvider
	tr trace.Tracer
}

// New returns a Tracer over tp (otlp.Setup's, or a test's), propagating
// W3C trace context.
func New(tp trace.TracerProvider) *Tracer {
	return &Tracer{tp: tp, tr: tp.Tracer(instrumentation)}
}

// Provider is the tracer provider (for instrumentation libraries such as
// otelgrpc); nil when tracing is off.
func (t *Tracer) Provider() trace.TracerProvider {
	if t == nil {
		return nil
	}
	return t.tp
}

// Propagator is the W3C trace-context propagator.
func (t *Tracer) Propagator() propagation.TextMapPropagator { return propagation.TraceContext{} }

// noSpan is what the nil Tracer returns: an interface value made once, so
// returning it does not allocate.
var noSpan trace.Span = noop.Span{}

// Publish starts the span of one publish message on channel.
func (t *Tracer) Publish(ctx context.Context, channel string) (context.Context, trace.Span) {
	if t == nil {
		return ctx, noSpan
	}
	return t.tr.Start(ctx, SpanPublish, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(AttrChannel.String(channel)))
}

// RedisPublish starts the span of the engine's publish script call.
func (t *Tracer) RedisPublish(ctx context.Context, channel string) (context.Context, trace.Span) {
	if t == nil {
		return ctx, noSpan
	}
	return t.tr.Start(ctx, SpanRedisPublish, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(semconv.DBSystemNameRedis, semconv.DBOperationName("EVALSHA"), AttrChannel.String(channel)))
}

// Published records the outcome of a publish on span: the offset the
// publication got, or the error.
func Published(span trace.Span, offset uint64, err error) {
	if !span.IsRecording() {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return
	}
	span.SetAttributes(AttrOffset.Int64(int64(offset)))
}

// TraceParent returns the W3C traceparent of ctx's span, to carry inside a
// Redis envelope; "" when tracing is off or ctx has no sampled span.
func (t *Tracer) TraceParent(ctx context.Context) string {
	if t == nil {
		return ""
	}
	var c carrier
	propagation.TraceContext{}.Inject(ctx, &c)
	return c.traceparent
}

// Fanout starts the span of this node handing a publication received from
// Redis to its subscribers; traceparent (possibly "") is the envelope's.
// The caller ends it once the publication is enqueued.
func (t *Tracer) Fanout(traceparent, channel string, offset uint64) trace.Span {
	if t == nil {
		return noSpan
	}
	ctx := context.Background()
	if traceparent != "" {
		ctx = propagation.TraceContext{}.Extract(ctx, &carrier{traceparent: traceparent})
	}
	_, span := t.tr.Start(ctx, SpanFanout, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(AttrChannel.String(channel), AttrOffset.Int64(int64(offset))))
	return span
}

// carrier is a propagation.TextMapCarrier holding only traceparent (the
// spans here carry no tracestate worth the envelope's bytes).
type carrier struct{ traceparent string }

const traceparentKey = "traceparent"

func (c *carrier) Get(key string) string {
	if key == traceparentKey {
		return c.traceparent
	}
	return ""
}

func (c *carrier) Set(key, value string) {
	if key == traceparentKey {
		c.traceparent = value
	}
}

func (c *carrier) Keys() []string { return []string{traceparentKey} }

// ForwardOut starts the span of a request forwarded to its session's
// owner and returns the traceparent to send along ("" when off).
func (t *Tracer) ForwardOut(ctx context.Context) (context.Context, trace.Span, string) {
	if t == nil {
		return ctx, noSpan, ""
	}
	ctx, span := t.tr.Start(ctx, SpanForward, trace.WithSpanKind(trace.SpanKindClient))
	return ctx, span, t.TraceParent(ctx)
}

// ForwardIn starts the owner's span of a forwarded request, a child of
// the forwarding node's span traceparent (possibly "").
func (t *Tracer) ForwardIn(ctx context.Context, traceparent string) (context.Context, trace.Span) {
	if t == nil {
		return ctx, noSpan
	}
	if traceparent != "" {
		ctx = propagation.TraceContext{}.Extract(ctx, &carrier{traceparent: traceparent})
	}
	return t.tr.Start(ctx, SpanForward, trace.WithSpanKind(trace.SpanKindServer))
}
