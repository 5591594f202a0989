package otlp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/bayeux-cluster/bayeux/pkg/tracing"
)

// DefaultServiceName is the service.name of the node's spans unless
// Config.ServiceName or OTEL_SERVICE_NAME says otherwise.
const DefaultServiceName = "bayeux-node"

// Config configures tracing.
type Config struct {
	// Endpoint is the OTLP/gRPC collector, host:port. Empty: tracing off.
	Endpoint string
	// Insecure sends spans in plaintext (a collector on the same host or
	// pod); otherwise the exporter uses TLS with the system roots.
	Insecure bool
	// ServiceName is the resource's service.name (default
	// DefaultServiceName; OTEL_SERVICE_NAME overrides it).
	ServiceName string
	// NodeID is the resource's service.instance.id (the node's id).
	NodeID string
	// Logger receives export errors (default slog.Default()).
	Logger *slog.Logger
}

// Setup starts tracing as cfg says. With no Endpoint it returns a nil
// *Tracer (tracing off) and a shutdown that does nothing. Otherwise spans
// are batched (the SDK's bounded queue of 2048 spans: when it is full, new
// spans are dropped, never waited for) and exported over OTLP/gRPC;
// shutdown flushes what is queued, within its ctx. The standard OTEL_*
// variables (sampler, batch delay, resource attributes) apply.
func Setup(ctx context.Context, cfg Config) (*tracing.Tracer, func(context.Context) error, error) {
	if cfg.Endpoint == "" {
		return nil, func(context.Context) error { return nil }, nil
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = DefaultServiceName
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.Endpoint)}
	if cfg.Insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("otlp exporter %s: %w", cfg.Endpoint, err)
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(cfg.ServiceName)}
	if cfg.NodeID != "" {
		attrs = append(attrs, semconv.ServiceInstanceID(cfg.NodeID))
	}
	// Later options win: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
	// override the defaults above.
	res, err := resource.New(ctx, resource.WithAttributes(attrs...), resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exp.Shutdown(ctx)
		return nil, nil, fmt.Errorf("tracing resource: %w", err)
	}
	// The SDK reports export errors to its process-wide handler only.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		cfg.Logger.Warn("tracing export failed", "err", err)
	}))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	cfg.Logger.Info("tracing on", "endpoint", cfg.Endpoint, "insecure", cfg.Insecure, "service", cfg.ServiceName)
	return tracing.New(tp), tp.Shutdown, nil
}
