package testproc

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestRedisCluster forms a three-master cluster with a replica each, writes
// through a cluster client, kills a master and waits for its replica to
// take over.
func TestRedisCluster(t *testing.T) {
	start := time.Now()
	c := StartRedisCluster(t, 3, 1)
	t.Logf("6 instances formed and ok in %v; URL %s", time.Since(start).Round(time.Millisecond), c.URL())
	if got := len(c.Masters()); got != 3 {
		t.Fatalf("%d masters, want 3", got)
	}
	if !strings.HasPrefix(c.URL(), "redis+cluster://127.0.0.1:") || strings.Count(c.URL(), ",") != 2 || strings.Contains(c.URL()[len("redis+cluster://"):], "/") {
		t.Fatalf("URL %q", c.URL())
	}
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Masters()})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		if err := rc.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	victim := c.Masters()[0]
	killed := time.Now()
	c.Kill(t, victim)
	if err := c.AwaitOK(15 * time.Second); err != nil {
		t.Fatalf("no failover after killing %s: %v", victim, err)
	}
	t.Logf("failover of %s in %v; masters now %v", victim, time.Since(killed).Round(time.Millisecond), c.Masters())
	if len(c.Masters()) != 3 {
		t.Fatalf("masters after failover %v", c.Masters())
	}
}

// TestRedisClusterInNamespaces forms a three-master cluster with each
// master in a network namespace of its own.
func TestRedisClusterInNamespaces(t *testing.T) {
	start := time.Now()
	n := StartNet(t)
	spaces := n.AddN(t, 3)
	t.Logf("bridge %s and 3 namespaces in %v", n.Bridge, time.Since(start).Round(time.Millisecond))
	var hosts []Host
	for _, ns := range spaces {
		hosts = append(hosts, ns)
	}
	c := StartRedisClusterOn(t, hosts, 3, 0)
	t.Logf("cluster ok in %v: %s", time.Since(start).Round(time.Millisecond), c.URL())
	for i, m := range c.Masters() {
		if !strings.HasPrefix(m, spaces[i].IP()+":") {
			t.Fatalf("master %d at %s, want in namespace %s (%s)", i, m, spaces[i].Name, spaces[i].IP())
		}
	}
}
