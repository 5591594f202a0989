package e2e

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// TestPublishCost measures what one publish costs the Redis backplane, in
// commands and in bytes, for clusters of 1, 3 and 10 nodes and for 10 and
// 200 subscribers spread over the nodes (issue 8, "cost per publish"; the
// inputs of docs/capacity.md).
//
// Totals come from Redis itself: INFO commandstats (calls per command) and
// INFO stats (total_net_input_bytes, bytes Redis read from its clients;
// total_net_output_bytes, bytes it wrote to them), as deltas over a window
// of publishes through node 0. Each node reaches Redis through its own
// counting TCP proxy, which splits the bytes per node; the test's own INFO
// client connects directly, so it is not in the per-node figures. In the
// totals, the INFO calls are removed by a calibration window (two INFO
// calls with nothing between) and INFO and PING by name in the command
// counts, as TestRedisCommandsPerPublish does.
//
// The nodes run with --demo=false (no node-stats publishes) and
// --max-interval 120s (session-record refreshes every 60 s, after the
// cluster is gone) and --lease-ttl 1h (lease renewals every 12 minutes),
// so nothing else talks to Redis during a window. Every
// channel name has the same length and every channel sees the same
// offsets, so the byte counts of all configurations are comparable to the
// byte.
//
// Asserted:
//   - 10 commands per publish (1 EVALSHA running HGET, HINCRBY, XADD, 2
//     PEXPIRE, 4 PUBLISH) in every configuration;
//   - only the publishing node sends anything to Redis;
//   - bytes in per publish are the same in every configuration;
//   - bytes out per publish do not depend on the number of subscribers,
//     and grow by one pub/sub delivery per node that has a subscriber on
//     the channel (the publishing node's EVALSHA reply aside), whatever
//     the size of the cluster.
func TestPublishCost(t *testing.T) {
	const publishes = costPublishes
	payload := strings.Repeat("x", 100)
	// subscribers are spread round-robin over the last subscribedNodes
	// nodes, so node 0, the publisher, has some only if every node has.
	type config struct{ subscribers, subscribedNodes int }
	plans := []struct {
		nodes   int
		configs []config
	}{
		{1, []config{{10, 1}, {200, 1}}},
		{3, []config{{10, 3}, {200, 3}}},
		// The last: all 200 subscribers on node 9, the publisher on node 0.
		{10, []config{{10, 10}, {200, 10}, {200, 1}}},
	}
	var results []costResult
	for _, plan := range plans {
		t.Run(fmt.Sprintf("nodes=%d", plan.nodes), func(t *testing.T) {
			redisSrv := testproc.StartRedis(t)
			c := &testproc.Cluster{Redis: redisSrv, Path: "/cometd"}
			proxies := make([]*countingProxy, plan.nodes)
			for i := range plan.nodes {
				proxies[i] = startCountingProxy(t, redisSrv.Addr)
				c.Nodes = append(c.Nodes, c.StartNodeWithRedis(t, "redis://"+proxies[i].addr, "--max-interval", "120s", "--demo=false", "--lease-ttl", "1h"))
			}
			c.WaitMembers(t, plan.nodes, 20*time.Second)
			rc := redis.NewClient(&redis.Options{Addr: redisSrv.Addr})
			defer rc.Close()
			ctx := context.Background()

			pub := &bayeuxtest.Peer{T: t, URL: c.Nodes[0].URL}
			pubID := pub.Handshake(nil)
			for k, cfg := range plan.configs {
				// Same length for every channel: /cost/n01c0 ... /cost/n10c2.
				ch := fmt.Sprintf("/cost/n%02dc%d", plan.nodes, k)
				subs := subscribeSpread(t, c.Nodes[plan.nodes-cfg.subscribedNodes:], ch, cfg.subscribers)
				// Creates the channel (epoch: DEL and HSET) outside the window.
				pub.MustSucceed(bayeuxtest.Msg{"channel": ch, "clientId": pubID, "data": payload})

				// The first INFO of a server adds a cmdstat_info line to
				// the next replies: read once so that s0 and s1 match.
				redisStats(t, ctx, rc)
				s0 := redisStats(t, ctx, rc)
				s1 := redisStats(t, ctx, rc) // s1-s0: the cost of one INFO call
				p1 := snapshot(proxies)
				start := time.Now()
				for range publishes {
					pub.MustSucceed(bayeuxtest.Msg{"channel": ch, "clientId": pubID, "data": payload})
				}
				window := time.Since(start)
				p2 := stableSnapshot(proxies)
				s2 := redisStats(t, ctx, rc)

				r := costResult{nodes: plan.nodes, subscribers: cfg.subscribers, subscribedNodes: cfg.subscribedNodes, commands: map[string]int64{}}
				var commands int64
				for name, v := range s2.calls {
					// Not per publish: INFO (this test), PING (each node's
					// readiness probe, every 500 ms, and pub/sub health
					// checks) and HELLO (a connection opened meanwhile).
					if d := v - s1.calls[name]; d > 0 && name != "info" && name != "ping" && name != "hello" {
						r.commands[name] = d
						commands += d
					}
				}
				r.pings = s2.calls["ping"] - s1.calls["ping"]
				r.commandsPerPublish = float64(commands) / publishes
				r.inPerPublish = float64((s2.in-s1.in)-(s1.in-s0.in)) / publishes
				r.outPerPublish = float64((s2.out-s1.out)-(s1.out-s0.out)) / publishes
				// Each node PINGs Redis every 500 ms (readiness): 14 bytes
				// in and a 7-byte +PONG out each, spread evenly over the
				// nodes. That is time, not publishes: taken out.
				pingsPerNode := float64(r.pings) / float64(len(proxies))
				r.inPerPublish -= float64(r.pings) * 14 / publishes
				r.outPerPublish -= float64(r.pings) * 7 / publishes
				for i := range proxies {
					r.nodeIn = append(r.nodeIn, (float64(p2[i].in-p1[i].in)-pingsPerNode*14)/publishes)
					r.nodeOut = append(r.nodeOut, (float64(p2[i].out-p1[i].out)-pingsPerNode*7)/publishes)
				}
				// Every subscriber got every message: the bytes measured are
				// those of real deliveries.
				for _, s := range subs {
					s.drain(t, publishes+1)
				}
				t.Logf("COST nodes=%d subscribers=%d subscribed_nodes=%d commands_per_publish=%.2f bytes_in_per_publish=%.1f bytes_out_per_publish=%.1f",
					r.nodes, r.subscribers, r.subscribedNodes, r.commandsPerPublish, r.inPerPublish, r.outPerPublish)
				t.Logf("COST-NODES nodes=%d subscribers=%d subscribed_nodes=%d in_per_publish=%s out_per_publish=%s (node 0 publishes; window %v, %d pings, commands %v)",
					r.nodes, r.subscribers, r.subscribedNodes, fmtList(r.nodeIn), fmtList(r.nodeOut), window.Round(time.Millisecond), r.pings, r.commands)
				results = append(results, r)
			}
		})
	}
	if t.Failed() || len(results) != 7 {
		return
	}
	checkPublishCost(t, results)
}

// costPublishes is the number of publishes in each measured window.
const costPublishes = 100

// costResult is the cost of one configuration, per publish.
type costResult struct {
	nodes, subscribers, subscribedNodes int
	commands                            map[string]int64 // calls in the window, INFO and PING left out
	pings                               int64
	commandsPerPublish                  float64
	inPerPublish, outPerPublish         float64   // INFO stats, calibrated
	nodeIn, nodeOut                     []float64 // per node, from its proxy
}

// checkPublishCost asserts the properties listed on TestPublishCost.
func checkPublishCost(t *testing.T, results []costResult) {
	t.Helper()
	// Tolerances: a PING of an idle pub/sub connection (about 21 bytes
	// both ways) may fall in a window; over 100 publishes that is 0.2 B.
	// The payload is 100 bytes, so a delivery is more than that.
	near := func(a, b, tol float64) bool { return math.Abs(a-b) <= tol }
	byKey := map[[3]int]costResult{}
	for _, r := range results {
		byKey[[3]int{r.nodes, r.subscribers, r.subscribedNodes}] = r
		if r.commandsPerPublish != 10 {
			t.Errorf("nodes=%d subscribers=%d: %.2f commands per publish %v, want 10 (EVALSHA, HGET, HINCRBY, XADD, 2 PEXPIRE, 4 PUBLISH)",
				r.nodes, r.subscribers, r.commandsPerPublish, r.commands)
		}
		if r.commands["evalsha"] != costPublishes || r.commands["publish"] != 4*costPublishes {
			t.Errorf("nodes=%d subscribers=%d: commands %v, want %d evalsha and %d publish", r.nodes, r.subscribers, r.commands, costPublishes, 4*costPublishes)
		}
		var sumIn, sumOut float64
		for i := range r.nodeIn {
			sumIn += r.nodeIn[i]
			sumOut += r.nodeOut[i]
			if i > 0 && r.nodeIn[i] > 1 {
				t.Errorf("nodes=%d subscribers=%d: node %d (not publishing) sent %.1f B per publish to Redis", r.nodes, r.subscribers, i, r.nodeIn[i])
			}
		}
		// The proxies see what Redis sees, minus the INFO client.
		if !near(sumIn, r.inPerPublish, 2) || !near(sumOut, r.outPerPublish, 2) {
			t.Errorf("nodes=%d subscribers=%d: per-node sums in %.1f out %.1f, Redis INFO in %.1f out %.1f",
				r.nodes, r.subscribers, sumIn, sumOut, r.inPerPublish, r.outPerPublish)
		}
	}
	base := byKey[[3]int{1, 10, 1}]
	for _, r := range results {
		if !near(r.inPerPublish, base.inPerPublish, 2) {
			t.Errorf("nodes=%d subscribers=%d: %.1f bytes in per publish, %.1f with 1 node", r.nodes, r.subscribers, r.inPerPublish, base.inPerPublish)
		}
	}
	for _, n := range []int{1, 3, 10} {
		a, b := byKey[[3]int{n, 10, n}], byKey[[3]int{n, 200, n}]
		// Per-subscriber work would add at least 190 deliveries' bytes;
		// the tolerance covers a connection set up meanwhile (HELLO).
		if !near(a.outPerPublish, b.outPerPublish, math.Max(2, 0.005*a.outPerPublish)) {
			t.Errorf("nodes=%d: bytes out per publish %.1f with 10 subscribers, %.1f with 200: depends on subscribers", n, a.outPerPublish, b.outPerPublish)
		}
	}
	// out = reply + k × delivery, k = nodes with a subscriber. Fit on 1
	// and 10 nodes, check on 3 and on 10 nodes with one subscribed node.
	one, ten := byKey[[3]int{1, 200, 1}], byKey[[3]int{10, 200, 10}]
	delivery := (ten.outPerPublish - one.outPerPublish) / 9
	reply := one.outPerPublish - delivery
	t.Logf("COST-MODEL bytes_out_per_publish = %.1f (EVALSHA reply) + %.1f x nodes with a subscriber; bytes_in_per_publish = %.1f (one EVALSHA)",
		reply, delivery, base.inPerPublish)
	if delivery < 100 || reply <= 0 {
		t.Errorf("delivery %.1f B, reply %.1f B: implausible (the payload alone is over 100 B)", delivery, reply)
	}
	for _, k := range [][3]int{{3, 10, 3}, {3, 200, 3}, {10, 200, 1}} {
		r := byKey[k]
		want := reply + float64(r.subscribedNodes)*delivery
		if !near(r.outPerPublish, want, math.Max(2, 0.01*want)) {
			t.Errorf("nodes=%d subscribers=%d subscribed_nodes=%d: %.1f bytes out per publish, want %.1f (reply + %d deliveries)",
				r.nodes, r.subscribers, r.subscribedNodes, r.outPerPublish, want, r.subscribedNodes)
		}
		// Per node: each subscribed node receives one delivery.
		for i, out := range r.nodeOut {
			subscribed := i >= r.nodes-r.subscribedNodes
			w := 0.0
			if subscribed {
				w = delivery
			}
			if i == 0 {
				w += reply
			}
			if !near(out, w, 2) {
				t.Errorf("nodes=%d subscribers=%d subscribed_nodes=%d: node %d received %.1f B per publish, want %.1f",
					r.nodes, r.subscribers, r.subscribedNodes, i, out, w)
			}
		}
	}
}

// costSub is a subscriber session of a raw long-polling peer.
type costSub struct {
	peer *bayeuxtest.Peer
	id   string
	ch   string
}

// drain connects until the session has received want messages on its
// channel (the held connect returns as soon as something is queued).
func (s *costSub) drain(t *testing.T, want int) {
	t.Helper()
	got := 0
	for got < want {
		d, _ := bayeuxtest.Split(s.peer.Connect(s.id, nil))
		if len(d) == 0 {
			t.Fatalf("subscriber %s: %d of %d messages, then an empty connect", s.id, got, want)
		}
		for _, m := range d {
			if m["channel"] == s.ch {
				got++
			}
		}
	}
	if got != want {
		t.Fatalf("subscriber %s: %d messages, want %d", s.id, got, want)
	}
}

// subscribeSpread handshakes n sessions spread round-robin over nodes and
// subscribes each to ch. It returns one subscriber per node (to check
// delivery later).
func subscribeSpread(t *testing.T, nodes []*testproc.Node, ch string, n int) []*costSub {
	t.Helper()
	firsts := make([]*costSub, len(nodes))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				p := &bayeuxtest.Peer{T: t, URL: nodes[i%len(nodes)].URL}
				id := p.Handshake(nil)
				p.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": ch})
				if i < len(nodes) {
					mu.Lock()
					firsts[i] = &costSub{peer: p, id: id, ch: ch}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return firsts
}

// redisCounters is one INFO stats+commandstats reading.
type redisCounters struct {
	calls   map[string]int64 // command → calls
	in, out int64            // total_net_input_bytes, total_net_output_bytes
}

func redisStats(t *testing.T, ctx context.Context, rc *redis.Client) redisCounters {
	t.Helper()
	info, err := rc.Info(ctx, "stats", "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := redisCounters{calls: map[string]int64{}}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch {
		case name == "total_net_input_bytes":
			out.in, err = strconv.ParseInt(rest, 10, 64)
		case name == "total_net_output_bytes":
			out.out, err = strconv.ParseInt(rest, 10, 64)
		case strings.HasPrefix(name, "cmdstat_"):
			for _, kv := range strings.Split(rest, ",") {
				if v, ok := strings.CutPrefix(kv, "calls="); ok {
					out.calls[strings.TrimPrefix(name, "cmdstat_")], err = strconv.ParseInt(v, 10, 64)
				}
			}
		}
		if err != nil {
			t.Fatalf("INFO line %q: %v", line, err)
		}
	}
	if out.in == 0 || out.out == 0 {
		t.Fatalf("INFO stats without total_net_input_bytes/total_net_output_bytes:\n%s", info)
	}
	return out
}

// countingProxy forwards a loopback port to Redis and counts the bytes of
// every connection through it: in is node → Redis, out is Redis → node.
type countingProxy struct {
	addr    string
	in, out atomic.Int64
}

type proxyCount struct{ in, out int64 }

func startCountingProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{addr: ln.Addr().String()}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.DialTimeout("tcp", target, time.Second)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); countCopy(up, c, &p.in); up.Close(); c.Close() }()
			go func() { defer wg.Done(); countCopy(c, up, &p.out); up.Close(); c.Close() }()
		}
	}()
	// Registered before the node that uses it, so it runs after the node
	// is killed.
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}

// countCopy copies src to dst, adding what it wrote to n as it goes.
func countCopy(dst io.Writer, src io.Reader, n *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			w, werr := dst.Write(buf[:k])
			n.Add(int64(w))
			if werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func snapshot(ps []*countingProxy) []proxyCount {
	out := make([]proxyCount, len(ps))
	for i, p := range ps {
		out[i] = proxyCount{p.in.Load(), p.out.Load()}
	}
	return out
}

// stableSnapshot waits until no proxy has moved a byte for 100 ms (the
// last deliveries are on their way to the nodes) and returns the counts.
func stableSnapshot(ps []*countingProxy) []proxyCount {
	prev := snapshot(ps)
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		cur := snapshot(ps)
		same := true
		for i := range cur {
			if cur[i] != prev[i] {
				same = false
			}
		}
		if same {
			return cur
		}
		prev = cur
	}
	return prev
}

func fmtList(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strconv.FormatFloat(x, 'f', 1, 64)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
