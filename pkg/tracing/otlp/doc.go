// Package otlp starts the node's tracing: Setup builds the OTLP/gRPC
// exporter, the batching tracer provider and its resource, and returns the
// tracing.Tracer the broker and the cluster are given (nil, tracing off,
// without an endpoint). It is apart from package tracing so that the
// packages holding the hooks do not link the SDK and the exporter.
package otlp
