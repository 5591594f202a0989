package otlp

import (
	"context"
	"testing"
	"time"
)

// TestSetupWithoutEndpointIsOff: no endpoint, no Tracer (tracing off).
func TestSetupWithoutEndpointIsOff(t *testing.T) {
	tr, shutdown, err := Setup(context.Background(), Config{})
	if err != nil || tr != nil {
		t.Fatalf("Setup without endpoint = %v, %v; want nil Tracer", tr, err)
	}
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestSetupShutdownBounded: with an endpoint, Setup returns a working Tracer, and
// shutdown returns within its context even if no collector answers.
func TestSetupShutdownBounded(t *testing.T) {
	tr, shutdown, err := Setup(context.Background(), Config{Endpoint: "127.0.0.1:1", Insecure: true, NodeID: "n1"})
	if err != nil || tr == nil {
		t.Fatalf("Setup: %v, %v", tr, err)
	}
	_, s := tr.Publish(context.Background(), "/x")
	s.End()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_ = shutdown(ctx) // the export fails: nothing listens
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
}
