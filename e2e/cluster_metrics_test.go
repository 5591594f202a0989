package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// sum adds the samples of series name (any labels).
func sum(m map[string]float64, name string) float64 {
	total := 0.0
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			total += v
		}
	}
	return total
}

// TestClusterMetrics scrapes every node of a running cluster before and
// after traffic through the balancer: the cluster series exist and move.
func TestClusterMetrics(t *testing.T) {
	c := testproc.StartCluster(t, 3)
	before := make([]map[string]float64, len(c.Nodes))
	for i, n := range c.Nodes {
		before[i] = n.Metrics(t)
		if got := sum(before[i], "bayeux_gossip_members"); got != 3 {
			t.Fatalf("node %d: bayeux_gossip_members = %v, want 3", i, got)
		}
	}
	// Traffic through the balancer: sessions land on every node and their
	// later requests are forwarded to the owners.
	sub := newRawSubscriber(t, c.URL(), "long-polling", "/metrics/ch")
	peer := &bayeuxtest.Peer{T: t, URL: c.URL()}
	id := peer.Handshake(nil)
	const n = 30
	for i := range n {
		peer.MustSucceed(bayeuxtest.Msg{"channel": "/metrics/ch", "clientId": id, "data": i})
	}
	waitReceived(t, []*rawSubscriber{sub}, n, 10*time.Second)

	series := []string{
		"bayeux_sessions", "bayeux_handshakes_total", "bayeux_connects_total", "bayeux_subscribes_total",
		"bayeux_publishes_total", "bayeux_deliveries_total", "bayeux_errors_total", "bayeux_queue_overflows_total",
		"bayeux_held_connects", "bayeux_gaps_total", "bayeux_redis_command_duration_seconds_count",
		"bayeux_redis_errors_total", "bayeux_grpc_forwards_total", "bayeux_gossip_members",
		"bayeux_queued_messages", "bayeux_gossip_health_score", "bayeux_delivery_latency_seconds_count",
		"bayeux_sessions_adopted_total",
	}
	moved := map[string]float64{}
	for i, nd := range c.Nodes {
		after := nd.Metrics(t)
		for _, s := range series {
			found := false
			for k := range after {
				if k == s || strings.HasPrefix(k, s+"{") {
					found = true
				}
			}
			if !found {
				t.Errorf("node %d: series %s missing", i, s)
			}
			moved[s] += sum(after, s) - sum(before[i], s)
		}
	}
	for _, s := range []string{"bayeux_handshakes_total", "bayeux_publishes_total", "bayeux_deliveries_total", "bayeux_delivery_latency_seconds_count",
		"bayeux_redis_command_duration_seconds_count", "bayeux_grpc_forwards_total", "bayeux_subscribes_total"} {
		if moved[s] <= 0 {
			t.Errorf("%s did not move across the cluster (delta %v)", s, moved[s])
		}
	}
	if moved["bayeux_publishes_total"] < n || moved["bayeux_deliveries_total"] < n {
		t.Errorf("publishes moved %v, deliveries %v; want >= %d each", moved["bayeux_publishes_total"], moved["bayeux_deliveries_total"], n)
	}
	t.Logf("cluster metrics deltas: %s", fmt.Sprint(moved))
}
