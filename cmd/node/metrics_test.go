package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// TestNodeMetrics drives a real node through handshake, subscribe, publish,
// connect (held and answered with the delivery) and an error, and checks
// that /metrics exports the broker series and that they moved.
func TestNodeMetrics(t *testing.T) {
	n := testproc.StartNode(t, nil, "--timeout", "20s", "--shutdown-grace", "2s")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	before := n.Metrics(t)
	// Every broker series is exported from the start, at zero.
	for _, s := range []string{
		`bayeux_sessions{transport="long-polling"}`,
		`bayeux_sessions{transport="callback-polling"}`,
		`bayeux_sessions{transport="websocket"}`,
		`bayeux_handshakes_total{result="ok"}`,
		`bayeux_handshakes_total{result="error"}`,
		`bayeux_connects_total`,
		`bayeux_subscribes_total`,
		`bayeux_publishes_total{result="ok"}`,
		`bayeux_publishes_total{result="error"}`,
		`bayeux_deliveries_total`,
		`bayeux_errors_total{code="402"}`,
		`bayeux_errors_total{code="other"}`,
		`bayeux_queue_overflows_total`,
		`bayeux_held_connects`,
		`bayeux_gaps_total`,
		`bayeux_limit_refusals_total{limit="sessions_per_ip"}`,
		`bayeux_limit_refusals_total{limit="held_per_ip"}`,
	} {
		v, ok := before[s]
		if !ok {
			t.Errorf("series %s missing", s)
		} else if v != 0 {
			t.Errorf("%s = %v before any traffic", s, v)
		}
	}
	// A single node exports no cluster series.
	for s := range before {
		for _, c := range []string{"bayeux_redis_", "bayeux_grpc_", "bayeux_gossip_"} {
			if strings.HasPrefix(s, c) {
				t.Errorf("cluster series %s on a single node", s)
			}
		}
	}
	if _, ok := before["go_goroutines"]; !ok {
		t.Error("Go runtime collector missing")
	}
	if t.Failed() {
		t.FailNow()
	}

	p := &bayeuxtest.Peer{T: t, URL: n.URL}
	id := p.Handshake(nil) // handshake + first (immediate) connect
	p.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/metrics/test"})

	// Hold a connect, see it in held_connects, then release it by publishing.
	held := make(chan []bayeuxtest.Msg, 1)
	go func() { held <- p.Connect(id, nil) }()
	bayeuxtest.Eventually(t, 5*time.Second, func() error {
		if v := n.Metrics(t)["bayeux_held_connects"]; v != 1 {
			return fmt.Errorf("bayeux_held_connects = %v, want 1", v)
		}
		return nil
	})
	pub := &bayeuxtest.Peer{T: t, URL: n.URL}
	pubID := pub.Handshake(nil)
	pub.MustSucceed(bayeuxtest.Msg{"channel": "/metrics/test", "clientId": pubID, "data": map[string]any{"n": 1}})
	select {
	case msgs := <-held:
		deliveries, _ := bayeuxtest.Split(msgs)
		if len(deliveries) != 1 {
			t.Fatalf("held connect answered with %v", msgs)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held connect not answered after the publish")
	}
	// An unknown client: a 402 error reply.
	if r := p.Connect("nosuchclient", nil); len(r) != 1 || r[0]["successful"] != false {
		t.Fatalf("connect of an unknown client: %v", r)
	}

	after := n.Metrics(t)
	want := map[string]float64{ // lower bounds
		`bayeux_sessions{transport="long-polling"}`: 2,
		`bayeux_handshakes_total{result="ok"}`:      2,
		`bayeux_connects_total`:                     3,
		`bayeux_subscribes_total`:                   1,
		`bayeux_publishes_total{result="ok"}`:       1,
		`bayeux_deliveries_total`:                   1,
		`bayeux_errors_total{code="402"}`:           1,
	}
	for s, min := range want {
		if v := after[s]; v < min {
			t.Errorf("%s = %v, want >= %v", s, v, min)
		}
	}
	for _, s := range []string{`bayeux_held_connects`, `bayeux_queue_overflows_total`, `bayeux_gaps_total`, `bayeux_publishes_total{result="error"}`} {
		if v, ok := after[s]; !ok || v != 0 {
			t.Errorf("%s = %v (exported %v), want 0", s, v, ok)
		}
	}

	// A disconnect closes the session: the gauge goes down.
	p.MustSucceed(bayeuxtest.Msg{"channel": "/meta/disconnect", "clientId": id})
	if v := n.Metrics(t)[`bayeux_sessions{transport="long-polling"}`]; v != 1 {
		t.Errorf("sessions after a disconnect = %v, want 1", v)
	}
}
