package e2e

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// chaosEnv is what a fault acts on.
type chaosEnv struct {
	c     *testproc.Cluster
	proxy *testproc.FaultProxy // node 1's link to Redis (proxied scenarios)
}

// chaosNodeArgs bound how long a connect is held and a drain lasts, so a
// scenario stays short.
var chaosNodeArgs = []string{"--timeout", "10s", "--shutdown-grace", "5s"}

// TestChaos is the chaos suite (issue 4, "Survive failures"). Each
// scenario runs Redis, three nodes and the balancer; three publishers at
// 50 msg/s each on three channels and 36 subscribers (6 of each kind: ack
// or replay extension over long-polling, callback-polling or websocket),
// all through the balancer; it injects one fault under load, lets the
// cluster recover, and prints one line of figures:
//
//	CHAOS scenario=<name> published=N acknowledged=N delivered_min=N delivered_max=N lost=N duplicated=N rehandshakes=N clientid_kept=K/M
//
// delivered_* are the deliveries per subscriber (duplicates included);
// lost sums, over subscribers, the acknowledged publishes each never
// received; duplicated the deliveries of a publication a subscriber
// already had; rehandshakes the subscribers' handshakes after their first;
// clientid_kept the subscribers whose clientId at the end is the one they
// started with. Every scenario requires lost=0, duplicated=0, a replay id
// on every delivery to a replay subscriber, and the cluster to recover
// (members, readiness, publishes acknowledged again); killing or draining
// a node also requires at least 99% of the sessions to survive (adoption).
// Publishes refused during the fault are expected and not counted. A line
// per subscriber group follows the figures, with the lost sequence
// numbers per publisher.
//
// Subscribers and publishers are spread evenly over the nodes' ownership
// (dialOwnedBy); node 1 is the one the fault hits.
func TestChaos(t *testing.T) {
	for _, sc := range []struct {
		name    string
		proxied bool // node 1 reaches Redis through a FaultProxy
		keepIDs bool // sessions must survive the fault
		fault   func(t *testing.T, env *chaosEnv) error
		sharded bool // on a three-master Redis Cluster
	}{
		{"kill9", false, true, chaosKill9, false},
		{"sigterm", false, true, chaosSigterm, false},
		{"redis-restart", false, false, chaosRedisRestart, false},
		{"redis-link", true, false, chaosRedisLink, false},
		{"gossip-isolate", false, false, chaosGossipIsolate, false},
		{"kill9-redis-cluster", false, true, chaosKill9, true},
		{"sigterm-redis-cluster", false, true, chaosSigterm, true},
	} {
		t.Run(sc.name, func(t *testing.T) {
			start := time.Now()
			env := &chaosEnv{}
			if sc.sharded {
				env.c = startOnRedisCluster(t, 3, chaosNodeArgs...)
			} else if sc.proxied {
				env.c, env.proxy = testproc.StartClusterWithProxy(t, 3, 1, chaosNodeArgs...)
			} else {
				// Redis keeps what it acknowledged across a crash (AOF,
				// fsync always): without that a Redis crash loses data,
				// which the nodes report as a gap (410) instead.
				env.c = testproc.StartClusterOn(t, testproc.StartRedisDurable(t), 3, chaosNodeArgs...)
			}
			r := startChaos(t, sc.name, env.c)
			faultStart := time.Now()
			if err := sc.fault(t, env); err != nil {
				t.Errorf("recovery from the fault: %v", err)
			}
			t.Logf("fault and recovery took %v", time.Since(faultStart).Round(time.Millisecond))
			if err := r.flowing(50, 15*time.Second); err != nil {
				t.Errorf("traffic after the fault: %v", err)
			}
			r.finish(20*time.Second, sc.keepIDs)
			t.Logf("scenario took %v", time.Since(start).Round(time.Millisecond))
		})
	}
}

// chaosKill9: SIGKILL node 1 under load. The balancer keeps it in its
// round-robin; the survivors must notice it is gone.
func chaosKill9(t *testing.T, env *chaosEnv) error {
	victim := env.c.Nodes[1]
	if err := victim.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, exited := victim.Wait(5 * time.Second); !exited {
		t.Fatal("killed node did not exit")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return env.c.AwaitMembers(ctx, 2)
}

// chaosSigterm: SIGTERM node 1 under load; it drains and exits.
func chaosSigterm(t *testing.T, env *chaosEnv) error {
	victim := env.c.Nodes[1]
	if err := victim.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err, exited := victim.Wait(15 * time.Second)
	if !exited {
		return fmt.Errorf("drained node did not exit within 15s")
	}
	if err != nil {
		return fmt.Errorf("drained node exited with %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return env.c.AwaitMembers(ctx, 2)
}

// chaosRedisRestart: crash Redis (SIGKILL) and start it again on the same
// port, with its append-only file, after the nodes noticed.
func chaosRedisRestart(t *testing.T, env *chaosEnv) error {
	down := time.Now()
	env.c.Redis.Kill()
	// The nodes stay ready (a Service is not emptied) and report it.
	if err := backplaneAll(env.c.Nodes, true, 10*time.Second); err != nil {
		t.Errorf("nodes did not report the Redis crash: %v", err)
	}
	time.Sleep(time.Until(down.Add(2 * time.Second))) // the outage lasts 2s
	env.c.Redis.StartAgain(t)
	// Reported back within 2s of Redis answering, subscriptions or not.
	return backplaneAll(env.c.Nodes, false, 2*time.Second)
}

// chaosRedisLink: node 1's link to Redis gets 100ms of latency each way
// for 3s, is then cut for 2s and restored.
func chaosRedisLink(t *testing.T, env *chaosEnv) error {
	victim := env.c.Nodes[1]
	const delay = 100 * time.Millisecond
	env.proxy.Delay(delay)
	rc := redis.NewClient(&redis.Options{Addr: env.proxy.Addr, MaxRetries: -1})
	defer rc.Close()
	pingStart := time.Now()
	if err := rc.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("ping through the slowed link: %v", err)
	}
	if rtt := time.Since(pingStart); rtt < 2*delay {
		t.Fatalf("latency not applied: ping through the proxy took %v", rtt)
	}
	time.Sleep(3 * time.Second) // a slow link under load
	cut := time.Now()
	env.proxy.Cut()
	if err := backplaneAll([]*testproc.Node{victim}, true, 10*time.Second); err != nil {
		t.Errorf("node did not report its Redis link cut: %v", err)
	}
	time.Sleep(time.Until(cut.Add(2 * time.Second))) // the cut lasts 2s
	env.proxy.Delay(0)
	env.proxy.Restore()
	return backplaneAll([]*testproc.Node{victim}, false, 2*time.Second)
}

// awaitIsolated waits (up to d) until victim sees only itself and every
// other node of c sees the others but not victim: a gossip partition.
func awaitIsolated(c *testproc.Cluster, victim *testproc.Node, d time.Duration) error {
	return pollUntil(d, func() error {
		for i, n := range c.Nodes {
			want := len(c.Nodes) - 1
			if n == victim {
				want = 1
			}
			if got, err := membersOf(n); err != nil || got != want {
				return fmt.Errorf("node %d sees %d members (%v), want %d", i, got, err, want)
			}
		}
		return nil
	})
}

// chaosGossipIsolate: cut node 1 off gossip for 3s (debug API) while its
// HTTP, gRPC and Redis links stay up, then restore it.
func chaosGossipIsolate(t *testing.T, env *chaosEnv) error {
	victim := env.c.Nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := victim.GossipIsolate(ctx); err != nil {
		t.Fatalf("gossip fault injection unavailable (cmd/node must register it with --debug-api): %v", err)
	}
	isolated := time.Now()
	if err := awaitIsolated(env.c, victim, 10*time.Second); err != nil {
		t.Fatalf("isolation did not take effect: %v", err)
	}
	t.Logf("isolated node seen dead (and seeing the others dead) after %v", time.Since(isolated).Round(time.Millisecond))
	time.Sleep(3 * time.Second) // the partition lasts
	// A fresh deadline: detecting the isolation may itself take seconds.
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	if err := victim.GossipRestore(rctx); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := env.c.AwaitMembers(ctx, 3); err != nil {
		return fmt.Errorf("%w (%v after restore)", err, time.Since(restored).Round(time.Millisecond))
	}
	t.Logf("membership healed %v after restore", time.Since(restored).Round(time.Millisecond))
	return nil
}
