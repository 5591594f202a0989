package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// otlpReceiver is an OTLP/gRPC trace collector keeping every span it is
// sent, with the node (service.instance.id) that sent it.
type otlpReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	addr  string
	mu    sync.Mutex
	spans []gotSpan
}

type gotSpan struct {
	node string
	*tracepb.Span
}

func (s gotSpan) String() string {
	return fmt.Sprintf("%s %q kind=%v trace=%s span=%s parent=%s attrs=%v", s.node, s.Name, s.Kind,
		hex.EncodeToString(s.TraceId), hex.EncodeToString(s.SpanId), hex.EncodeToString(s.ParentSpanId), s.Attributes)
}

func startReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{addr: ln.Addr().String()}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, r)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return r
}

func (r *otlpReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		node := attr(rs.GetResource().GetAttributes(), "service.instance.id")
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				r.spans = append(r.spans, gotSpan{node, sp})
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func attr(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

// find returns the one span matching f, or an error naming what is missing.
func (r *otlpReceiver) find(what string, f func(gotSpan) bool) (gotSpan, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var found []gotSpan
	for _, s := range r.spans {
		if f(s) {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		return gotSpan{}, fmt.Errorf("%s: %d spans, want 1 (of %d received)", what, len(found), len(r.spans))
	}
	return found[0], nil
}

func (r *otlpReceiver) all() []gotSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]gotSpan(nil), r.spans...)
}

// await polls for the span f matches.
func (r *otlpReceiver) await(t *testing.T, what string, f func(gotSpan) bool) gotSpan {
	t.Helper()
	var s gotSpan
	bayeuxtest.Eventually(t, 20*time.Second, func() (err error) {
		s, err = r.find(what, f)
		return err
	})
	return s
}

func childOf(parent gotSpan) func(gotSpan) bool {
	return func(s gotSpan) bool {
		return string(s.TraceId) == string(parent.TraceId) && string(s.ParentSpanId) == string(parent.SpanId)
	}
}

func and(fs ...func(gotSpan) bool) func(gotSpan) bool {
	return func(s gotSpan) bool {
		for _, f := range fs {
			if !f(s) {
				return false
			}
		}
		return true
	}
}

func named(node, name string, kind tracepb.Span_SpanKind) func(gotSpan) bool {
	return func(s gotSpan) bool { return s.node == node && s.Name == name && s.Kind == kind }
}

func onChannel(ch string) func(gotSpan) bool {
	return func(s gotSpan) bool { return attr(s.Attributes, "bayeux.channel") == ch }
}

// TestTracingAcrossNodes runs Redis and three real nodes, a and b exporting
// to an in-process OTLP receiver and c with tracing off (only the standard
// OTEL_EXPORTER_OTLP_ENDPOINT set, which must not turn it on). A publish
// through a, received by subscribers on b and c, makes one trace: the
// publish span on a, the Redis publish span as its child, and b's fan-out
// span as the Redis span's child (context carried in the Redis envelope,
// which c, not tracing, still reads). A publish through b for a session a
// owns makes the forward span on b (client), its child on a (server) and a's
// publish span in one trace. Node c exports nothing.
func TestTracingAcrossNodes(t *testing.T) {
	rcv := startReceiver(t)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50") // ms between batch exports (default 5 s)
	redis := testproc.StartRedis(t)
	traced := []string{"--otel-endpoint", rcv.addr, "--otel-insecure"}
	start := func(id string, env []string, join *testproc.Node, extra ...string) *testproc.Node {
		args := []string{"--redis", redis.URL(), "--node-id", id, "--gossip-listen", "127.0.0.1:0",
			"--grpc-listen", "127.0.0.1:0", "--gossip-fast", "--debug-api", "--timeout", "5s"}
		if join != nil {
			args = append(args, "--join", join.Gossip)
		}
		return testproc.StartNode(t, env, append(args, extra...)...)
	}
	a := start("a", nil, nil, traced...)
	b := start("b", nil, a, traced...)
	c := start("c", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + rcv.addr, "OTEL_EXPORTER_OTLP_INSECURE=true"}, a)
	(&testproc.Cluster{Nodes: []*testproc.Node{a, b, c}}).WaitMembers(t, 3, 20*time.Second)

	const ch = "/trace/news"
	pubA := &bayeuxtest.Peer{T: t, URL: a.URL}
	publisher := pubA.Handshake(nil)
	subscribers := map[string]*bayeuxtest.Peer{"b": {T: t, URL: b.URL}, "c": {T: t, URL: c.URL}}
	ids := map[string]string{}
	for node, p := range subscribers {
		ids[node] = p.Handshake(nil)
		p.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": ids[node], "subscription": ch})
	}
	pubA.MustSucceed(bayeuxtest.Msg{"channel": ch, "clientId": publisher, "data": map[string]any{"n": 1}})
	for node, p := range subscribers {
		awaitDelivery(t, p, ids[node], ch, 1)
	}

	publish := rcv.await(t, "publish span on a", and(named("a", "bayeux publish", tracepb.Span_SPAN_KIND_PRODUCER), onChannel(ch)))
	if len(publish.ParentSpanId) != 0 {
		t.Errorf("publish from a client request has a parent: %v", publish)
	}
	rpub := rcv.await(t, "redis publish span on a, child of the publish span",
		and(named("a", "redis publish", tracepb.Span_SPAN_KIND_CLIENT), onChannel(ch), childOf(publish)))
	if attr(rpub.Attributes, "db.system.name") != "redis" {
		t.Errorf("redis span attributes: %v", rpub)
	}
	fan := rcv.await(t, "fan-out span on b, child of the redis publish span",
		and(named("b", "bayeux fanout", tracepb.Span_SPAN_KIND_CONSUMER), onChannel(ch), childOf(rpub)))
	t.Logf("one trace:\n  %v\n  %v\n  %v", publish, rpub, fan)

	// Forwarded: the publisher's session is a's; b forwards the request.
	pubB := &bayeuxtest.Peer{T: t, URL: b.URL}
	pubB.MustSucceed(bayeuxtest.Msg{"channel": ch, "clientId": publisher, "data": map[string]any{"n": 2}})
	client := rcv.await(t, "forward span on b", named("b", "bayeux forward", tracepb.Span_SPAN_KIND_CLIENT))
	server := rcv.await(t, "forward span on a, child of b's",
		and(named("a", "bayeux forward", tracepb.Span_SPAN_KIND_SERVER), childOf(client)))
	fwd := rcv.await(t, "publish span on a, child of a's forward span",
		and(named("a", "bayeux publish", tracepb.Span_SPAN_KIND_PRODUCER), onChannel(ch), childOf(server)))
	rcv.await(t, "redis publish span of the forwarded publish", and(named("a", "redis publish", tracepb.Span_SPAN_KIND_CLIENT), childOf(fwd)))
	for node, p := range subscribers {
		awaitDelivery(t, p, ids[node], ch, 2)
	}
	// b's fan-out of the second publication: exported after c received it.
	rcv.await(t, "fan-out of the forwarded publish on b", and(named("b", "bayeux fanout", tracepb.Span_SPAN_KIND_CONSUMER), func(s gotSpan) bool {
		return string(s.TraceId) == string(fwd.TraceId)
	}))
	for _, s := range rcv.all() {
		if s.node != "a" && s.node != "b" {
			t.Errorf("span from a node not tracing: %v", s)
		}
	}
}

// awaitDelivery connects as id until a delivery with data.n == n on ch.
func awaitDelivery(t *testing.T, p *bayeuxtest.Peer, id, ch string, n float64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		deliveries, _ := bayeuxtest.Split(p.Connect(id, nil))
		for _, d := range deliveries {
			if data, _ := d["data"].(map[string]any); d["channel"] == ch && data["n"] == n {
				return
			}
		}
	}
	t.Fatalf("%s: no delivery of n=%v on %s", p.URL, n, ch)
}
