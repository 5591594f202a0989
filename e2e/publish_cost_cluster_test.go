package e2e

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// TestPublishCostRedisCluster measures the cost of one publish on a
// three-master Redis Cluster (sharded pub/sub), as TestPublishCost does on
// one instance: three nodes, every node with subscribers, four channels,
// each measured with 10 subscribers and again with 200.
//
// Asserted, per channel:
//   - 10 commands per publish (1 EVALSHA running HGET, HINCRBY, XADD, 2
//     PEXPIRE and 4 SPUBLISH: the channel and /cost/*, /cost/**, /**),
//     all on one shard, the owner of the channel's partition; the other
//     shards do nothing;
//   - bytes out per publish do not depend on the number of subscribers
//     (the same for 10 and 200 on a channel, within 2 bytes: one EVALSHA
//     reply plus one delivery per node);
//   - the channels land on more than one shard.
func TestPublishCostRedisCluster(t *testing.T) {
	const publishes = costPublishes
	payload := strings.Repeat("x", 100)
	rc := testproc.StartRedisCluster(t, 3, 0)
	c := testproc.StartClusterOnURL(t, rc.URL(), 3, "--max-interval", "120s", "--demo=false", "--lease-ttl", "1h")
	ctx := context.Background()
	var shards []*redis.Client
	for _, addr := range rc.Masters() {
		cl := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { _ = cl.Close() })
		shards = append(shards, cl)
	}
	stats := func() []redisCounters {
		out := make([]redisCounters, len(shards))
		for i, s := range shards {
			out[i] = redisStats(t, ctx, s)
		}
		return out
	}
	pub := &bayeuxtest.Peer{T: t, URL: c.Nodes[0].URL}
	pubID := pub.Handshake(nil)
	used := map[int]bool{}
	// upkeep reports whether a shard ran the clients' topology upkeep
	// between a and b: go-redis reloads the slot map (CLUSTER SLOTS) every
	// 10 s per client (ClusterStateReloadInterval), on a timer, not per
	// publish; a window it falls in is measured again.
	upkeep := func(a, b []redisCounters) bool {
		for i := range a {
			if b[i].calls["cluster|slots"] != a[i].calls["cluster|slots"] {
				return true
			}
		}
		return false
	}
	// measure returns the bytes out per publish and how many windows of
	// publishes it ran.
	measure := func(ch string, subscribers int) (float64, int) {
		var s0, s1, s2 []redisCounters
		windows := 0
		for try := 0; ; try++ {
			windows++
			stats()
			s0 = stats()
			s1 = stats()
			for range publishes {
				pub.MustSucceed(bayeuxtest.Msg{"channel": ch, "clientId": pubID, "data": payload})
			}
			s2 = stats()
			if !upkeep(s0, s2) || try == 2 {
				break
			}
			t.Logf("%s: a slot-map reload fell in the window; measuring again", ch)
		}
		owner := -1
		var out float64
		for i := range shards {
			cmds := map[string]int64{}
			var n int64
			for name, v := range s2[i].calls {
				if d := v - s1[i].calls[name]; d > 0 && name != "info" && name != "ping" {
					cmds[name] = d
					n += d
				}
			}
			if n == 0 {
				continue
			}
			if owner >= 0 {
				t.Errorf("%s: shards %d and %d both ran commands for one channel", ch, owner, i)
			}
			owner = i
			used[i] = true
			if n != 10*publishes || cmds["evalsha"] != publishes || cmds["spublish"] != 4*publishes {
				t.Errorf("%s: shard %d ran %v for %d publishes; want 10 per publish, 1 evalsha and 4 spublish", ch, i, cmds, publishes)
			}
			in := float64((s2[i].in-s1[i].in)-(s1[i].in-s0[i].in)) / publishes
			out = float64((s2[i].out-s1[i].out)-(s1[i].out-s0[i].out)) / publishes
			t.Logf("COST-SHARDED channel=%s subscribers=%d shard=%d commands_per_publish=%.2f bytes_in_per_publish=%.1f bytes_out_per_publish=%.1f commands=%v",
				ch, subscribers, i, float64(n)/publishes, in, out, cmds)
		}
		if owner < 0 {
			t.Fatalf("%s: no shard ran the publishes", ch)
		}
		return out, windows
	}
	for k := range 4 {
		ch := fmt.Sprintf("/cost/rc%d", k)
		subs := subscribeSpread(t, c.Nodes, ch, 10)
		// Offsets 1..100 before the windows, so that both windows' offsets
		// (101..200, 201..300) have the same number of digits.
		for range publishes {
			pub.MustSucceed(bayeuxtest.Msg{"channel": ch, "clientId": pubID, "data": payload})
		}
		few, fewWindows := measure(ch, 10)
		more := subscribeSpread(t, c.Nodes, ch, 190)
		many, manyWindows := measure(ch, 200)
		if math.Abs(few-many) > 2 {
			t.Errorf("%s: %.1f bytes out per publish with 10 subscribers, %.1f with 200", ch, few, many)
		}
		for _, s := range subs {
			s.drain(t, (1+fewWindows+manyWindows)*publishes)
		}
		for _, s := range more {
			s.drain(t, manyWindows*publishes)
		}
	}
	if len(used) < 2 {
		t.Errorf("all four channels landed on one shard (%v): partitions are not spread", used)
	}
}
