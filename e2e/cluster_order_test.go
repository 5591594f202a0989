package e2e

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

var transports = []string{"long-polling", "callback-polling", "websocket"}

// TestClusterOrder: three publishers, each on a different node, send 500
// numbered messages each to one channel while subscribers on every node
// (and through the balancer) on every transport record what they receive.
// Every subscriber's sequence must be identical, each publisher's messages
// in order, none missing or doubled.
func TestClusterOrder(t *testing.T) {
	forEachBackplane(t, func(t *testing.T, start func(t *testing.T, n int, extra ...string) *testproc.Cluster) {
		testClusterOrder(t, start(t, 3))
	})
}

func testClusterOrder(t *testing.T, c *testproc.Cluster) {
	const perPublisher = 500
	ch := "/order/main"
	var subs []*rawSubscriber
	for _, n := range c.Nodes {
		for _, tr := range transports {
			subs = append(subs, newRawSubscriber(t, n.URL, tr, ch))
		}
	}
	for _, tr := range transports {
		subs = append(subs, newRawSubscriber(t, c.URL(), tr, ch))
	}
	start := time.Now()
	var wg sync.WaitGroup
	for p, n := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			peer := &bayeuxtest.Peer{T: t, URL: n.URL}
			id := peer.Handshake(nil)
			for i := range perPublisher {
				peer.MustSucceed(bayeuxtest.Msg{"channel": ch, "clientId": id, "data": map[string]int{"p": p, "i": i}})
			}
		}()
	}
	wg.Wait()
	total := perPublisher * len(c.Nodes)
	waitReceived(t, subs, total, 60*time.Second)
	elapsed := time.Since(start)

	ref, _ := subs[0].received()
	for k, s := range subs {
		got, err := s.received()
		if err != "" {
			t.Fatalf("subscriber %d (%s) stopped: %s", k, s.transport, err)
		}
		if len(got) != total {
			t.Fatalf("subscriber %d (%s): %d deliveries, want %d", k, s.transport, len(got), total)
		}
		for i := range got {
			if got[i] != ref[i] {
				t.Fatalf("subscriber %d (%s) differs from subscriber 0 at %d: %s vs %s", k, s.transport, i, got[i], ref[i])
			}
		}
	}
	next := make([]int, len(c.Nodes))
	for i, raw := range ref {
		var d struct{ P, I int }
		if err := json.Unmarshal([]byte(raw), &d); err != nil {
			t.Fatalf("delivery %d %s: %v", i, raw, err)
		}
		if d.I != next[d.P] {
			t.Fatalf("publisher %d: got message %d, want %d (missing, doubled or reordered)", d.P, d.I, next[d.P])
		}
		next[d.P]++
	}
	t.Logf("order: %d publishers x %d messages, %d subscribers (3 nodes + balancer, 3 transports): identical sequences, per-publisher order kept, 0 missing, 0 doubled; %v (%s msg/s published)",
		len(c.Nodes), perPublisher, len(subs), elapsed.Round(time.Millisecond), fmt.Sprintf("%.0f", float64(total)/elapsed.Seconds()))
}
