package cluster

import (
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"

	clusterv1 "github.com/bayeux-cluster/bayeux/api/proto/cluster/v1"

	"github.com/bayeux-cluster/bayeux/pkg/tracing"
)

// otelgrpcOptions: tr's provider and propagator (never the process-wide
// ones), no metrics (the node's Prometheus registry has its own), and no
// spans for health checks nor for forward streams (one lives as long as
// its connection; each request on it has its own span instead,
// tracing.Tracer.ForwardOut and ForwardIn).
func otelgrpcOptions(tr *tracing.Tracer) []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(tr.Provider()),
		otelgrpc.WithPropagators(tr.Propagator()),
		otelgrpc.WithMeterProvider(noop.NewMeterProvider()),
		otelgrpc.WithFilter(filters.None(filters.HealthCheck(), filters.FullMethodName(clusterv1.Node_Forward_FullMethodName))),
	}
}

// grpcServerTracing returns the options tracing the node-to-node gRPC
// server, none when tracing is off (tr nil).
func grpcServerTracing(tr *tracing.Tracer) []grpc.ServerOption {
	if tr == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpcOptions(tr)...))}
}

// grpcClientTracing returns the options tracing the node-to-node gRPC
// client, none when tracing is off (tr nil).
func grpcClientTracing(tr *tracing.Tracer) []grpc.DialOption {
	if tr == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpcOptions(tr)...))}
}
