// Package tracing holds the node's OpenTelemetry span hooks: Tracer is the
// one type the broker and the cluster engine call, so span names, kinds and
// attributes live here and nowhere else. It depends on the OpenTelemetry
// API only; package tracing/otlp builds a Tracer from an OTLP/gRPC exporter
// (Setup).
//
// Spans (see docs/architecture.md, "Tracing"):
//
//   - "bayeux publish" (producer): a publish message processed on the node
//     that owns the publisher's session (or a server-side publish);
//   - "redis publish" (client): the engine's publish script call, a child
//     of the publish span;
//   - "bayeux fanout" (consumer): one per node per publication received
//     from Redis, around handing it to the node's subscribers; its parent
//     is the "redis publish" span, whose W3C traceparent travels inside the
//     Redis pub/sub envelope;
//   - the node-to-node gRPC calls (forwarded requests, session operations),
//     by otelgrpc stats handlers that package cluster installs with the
//     Tracer's Provider and Propagator, the trace context in gRPC metadata.
//
// The nil *Tracer is tracing off: every method returns at once without
// allocating (it does not even call the OpenTelemetry no-op provider, whose
// Start allocates a context), and the envelope carries no trace context.
package tracing
