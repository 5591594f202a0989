package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// publisher publishes numbered messages to ch, one at a time (each
// acknowledged before the next), alternating over urls, until stop is
// closed. It returns the numbers that were acknowledged.
func publisher(t *testing.T, ch string, urls []string, interval time.Duration, stop <-chan struct{}) func() []int {
	var mu sync.Mutex
	var acked []int
	done := make(chan struct{})
	go func() {
		defer close(done)
		peers := make([]*bayeuxtest.Peer, len(urls))
		ids := make([]string, len(urls))
		for i, u := range urls {
			peers[i] = &bayeuxtest.Peer{T: t, URL: u}
			ids[i] = peers[i].Handshake(nil)
		}
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-time.After(interval):
			}
			k := n % len(peers)
			r := peers[k].Post(bayeuxtest.Msg{"channel": ch, "clientId": ids[k], "data": n})
			if len(r) == 1 && r[0]["successful"] == true {
				mu.Lock()
				acked = append(acked, n)
				mu.Unlock()
			}
		}
	}()
	return func() []int {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return acked
	}
}

// checkAll verifies a subscriber received exactly the acknowledged numbers,
// in order.
func checkAll(t *testing.T, name string, s *rawSubscriber, acked []int) {
	t.Helper()
	got, err := s.received()
	if err != "" {
		t.Fatalf("%s stopped: %s", name, err)
	}
	if len(got) != len(acked) {
		t.Fatalf("%s received %d messages, %d were acknowledged", name, len(got), len(acked))
	}
	for i := range got {
		if got[i] != strconv.Itoa(acked[i]) {
			t.Fatalf("%s: delivery %d is %s, want %d", name, i, got[i], acked[i])
		}
	}
}

// TestClusterMembershipChange: a node joins and another leaves while
// messages flow; subscribers on the surviving nodes miss nothing.
func TestClusterMembershipChange(t *testing.T) {
	forEachBackplane(t, func(t *testing.T, start func(t *testing.T, n int, extra ...string) *testproc.Cluster) {
		testClusterMembershipChange(t, start(t, 3))
	})
}

func testClusterMembershipChange(t *testing.T, c *testproc.Cluster) {
	ch := "/members/flow"
	var subs []*rawSubscriber
	for _, n := range c.Nodes[:2] {
		for _, tr := range transports {
			subs = append(subs, newRawSubscriber(t, n.URL, tr, ch))
		}
	}
	stop := make(chan struct{})
	result := publisher(t, ch, []string{c.Nodes[0].URL, c.Nodes[1].URL}, 5*time.Millisecond, stop)
	time.Sleep(300 * time.Millisecond) // traffic flows before the change (not a synchronisation)

	n4 := c.StartNode(t)
	c.Nodes = append(c.Nodes, n4)
	joined := c.WaitMembers(t, 4, 10*time.Second)
	leaveStart := time.Now()
	if err := c.Nodes[2].Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, exited := c.Nodes[2].Wait(15 * time.Second); !exited {
		t.Fatal("leaving node did not exit")
	}
	c.WaitMembers(t, 3, 20*time.Second)
	t.Logf("membership convergence: node 4 seen by all %v after it served; node 3 (SIGTERM) gone from all %v after the signal",
		joined.Round(time.Millisecond), time.Since(leaveStart).Round(time.Millisecond))
	// The new node serves traffic too: a subscriber on it receives what
	// follows.
	late := newRawSubscriber(t, n4.URL, "long-polling", ch)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	acked := result()
	if len(acked) < 50 {
		t.Fatalf("only %d publishes acknowledged", len(acked))
	}
	waitReceived(t, subs, len(acked), 20*time.Second)
	for i, s := range subs {
		checkAll(t, fmt.Sprintf("subscriber %d (%s)", i, s.transport), s, acked)
	}
	got, _ := late.received()
	if len(got) == 0 {
		t.Fatal("subscriber on the joined node received nothing")
	}
	t.Logf("membership change: %d messages acknowledged, %d subscribers on surviving nodes received all in order", len(acked), len(subs))
}

// TestClusterRedisLinkCut cuts one node's link to Redis while another node
// publishes: its subscribers either receive everything (recovered from
// history) or are told (error on connect) — never a silent gap.
func TestClusterRedisLinkCut(t *testing.T) {
	c := testproc.StartCluster(t, 2)
	proxy := testproc.StartProxy(t, c.Redis.Addr)
	cutNode := c.StartNodeWithRedis(t, "redis://"+proxy.Addr)
	c.Nodes = append(c.Nodes, cutNode)
	c.WaitMembers(t, 3, 10*time.Second)

	ch := "/cut/concrete"
	concrete := []*rawSubscriber{
		newRawSubscriber(t, cutNode.URL, "long-polling", ch),
		newRawSubscriber(t, cutNode.URL, "websocket", ch),
	}
	wild := newRawSubscriber(t, cutNode.URL, "long-polling", "/cut/*")
	stop := make(chan struct{})
	result := publisher(t, ch, []string{c.Nodes[0].URL}, 5*time.Millisecond, stop)
	time.Sleep(300 * time.Millisecond)
	proxy.Cut()
	// While its Redis link is down, the node refuses publishes loudly.
	pp := &bayeuxtest.Peer{T: t, URL: cutNode.URL}
	bayeuxtest.Eventually(t, 5*time.Second, func() error {
		r := pp.Post(bayeuxtest.Msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}})
		id, _ := r[0]["clientId"].(string)
		r = pp.Post(bayeuxtest.Msg{"channel": "/cut/refused", "clientId": id, "data": 1})
		if r[0]["successful"] == false && strings.HasPrefix(fmt.Sprint(r[0]["error"]), "503:") {
			return nil
		}
		return fmt.Errorf("publish during the outage: %v", r)
	})
	// It stays ready, reporting the outage, and reports its end within 2s.
	bayeuxtest.Eventually(t, 10*time.Second, func() error { return backplaneDown(cutNode, true) })
	time.Sleep(1500 * time.Millisecond) // the outage lasts a while
	proxy.Restore()
	bayeuxtest.Eventually(t, 2*time.Second, func() error { return backplaneDown(cutNode, false) })
	time.Sleep(3 * time.Second) // reconnect (backoff up to 2s) and traffic after it
	close(stop)
	acked := result()
	waitReceived(t, concrete, len(acked), 20*time.Second)
	for i, s := range concrete {
		checkAll(t, fmt.Sprintf("concrete subscriber %d (%s)", i, s.transport), s, acked)
	}
	// The wildcard subscriber's unseen channels cannot be caught up, so it
	// must have been told (410) — or have received everything.
	got, errStr := wild.received()
	switch {
	case errStr != "":
		if !strings.HasPrefix(errStr, "410:") {
			t.Fatalf("wildcard subscriber stopped with %q, want 410", errStr)
		}
		for i := range got {
			if got[i] != strconv.Itoa(acked[i]) {
				t.Fatalf("wildcard subscriber: silent gap before being told at %d: %s vs %d", i, got[i], acked[i])
			}
		}
		t.Logf("redis link cut: %d acknowledged; concrete subscribers recovered all from history; wildcard subscriber told after %d (410)", len(acked), len(got))
	default:
		waitReceived(t, []*rawSubscriber{wild}, len(acked), 10*time.Second)
		checkAll(t, "wildcard subscriber", wild, acked)
	}
}

// TestRedisCommandsPerPublish: the Redis work of a publish does not depend
// on the number of subscribers (INFO commandstats, 10 vs 1000).
func TestRedisCommandsPerPublish(t *testing.T) {
	c := testproc.StartCluster(t, 3, "--max-interval", "120s", "--demo=false", "--lease-ttl", "1h") // no node-stats publishes nor lease renewals in the counts
	rc := redis.NewClient(&redis.Options{Addr: c.Redis.Addr})
	defer rc.Close()
	ctx := context.Background()
	measure := func(subscribers int) (float64, map[string]int64) {
		ch := fmt.Sprintf("/cost/s%d", subscribers)
		var wg sync.WaitGroup
		var made atomic.Int64
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < subscribers; i += 8 {
					p := &bayeuxtest.Peer{T: t, URL: c.Nodes[i%len(c.Nodes)].URL}
					id := p.Handshake(nil)
					p.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": ch})
					made.Add(1)
				}
			}()
		}
		wg.Wait()
		pub := &bayeuxtest.Peer{T: t, URL: c.Nodes[0].URL}
		id := pub.Handshake(nil)
		before := commandStats(t, ctx, rc)
		const publishes = 50
		for i := range publishes {
			pub.MustSucceed(bayeuxtest.Msg{"channel": ch, "clientId": id, "data": i})
		}
		after := commandStats(t, ctx, rc)
		delta := map[string]int64{}
		var total int64
		for k, v := range after {
			// info and ping are ours and the health checks'; del and hset
			// run once per channel (its epoch is created on first publish).
			if d := v - before[k]; d > 0 && k != "info" && k != "ping" && k != "del" && k != "hset" {
				delta[k] = d
				total += d
			}
		}
		return float64(total) / publishes, delta
	}
	small, ds := measure(10)
	large, dl := measure(1000)
	t.Logf("redis commands per publish: %.2f with 10 subscribers %v; %.2f with 1000 subscribers %v", small, ds, large, dl)
	if small != large {
		t.Fatalf("commands per publish depend on subscribers: %.2f vs %.2f", small, large)
	}
	// EVALSHA, HGET, HINCRBY, XADD, 2 PEXPIRE, and PUBLISH to the channel
	// and its 3 possible wildcard patterns (/cost/*, /cost/**, /**).
	if small != 10 {
		t.Fatalf("%.2f commands per publish: want exactly 10", small)
	}
}

func commandStats(t *testing.T, ctx context.Context, rc *redis.Client) map[string]int64 {
	t.Helper()
	info, err := rc.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				out[strings.TrimPrefix(name, "cmdstat_")] = n
			}
		}
	}
	return out
}

// readyz checks the node's /readyz status.
func readyz(n *testproc.Node, want int) error {
	_, err := readyzBody(n, want)
	return err
}

// readyzBody checks the node's /readyz status and returns its body.
func readyzBody(n *testproc.Node, want int) (string, error) {
	resp, err := http.Get(n.Base + "/readyz")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != want {
		return string(body), fmt.Errorf("/readyz = %d (%s), want %d", resp.StatusCode, strings.TrimSpace(string(body)), want)
	}
	return string(body), nil
}

// backplaneDown checks that the node stays ready and reports its
// backplane outage (down) or its end (!down) in /readyz.
func backplaneDown(n *testproc.Node, down bool) error {
	body, err := readyzBody(n, 200)
	if err != nil {
		return err
	}
	if got := strings.Contains(body, "backplane unavailable"); got != down {
		return fmt.Errorf("/readyz %q: backplane reported down = %v, want %v", strings.TrimSpace(body), got, down)
	}
	return nil
}
