package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

func TestParseSentinelURL(t *testing.T) {
	for _, tc := range []struct {
		url       string
		sentinels []string
		master    string
		db        int
		user, pw  string
		sentPw    string
		tls       bool
		err       string
	}{
		{url: "redis+sentinel://h1:26379/mymaster", sentinels: []string{"h1:26379"}, master: "mymaster"},
		{url: "redis+sentinel://h1,h2:26380,h3/m?db=3", sentinels: []string{"h1:26379", "h2:26380", "h3:26379"}, master: "m", db: 3},
		{url: "redis+sentinel://u:p%40ss@h1:1/m", sentinels: []string{"h1:1"}, master: "m", user: "u", pw: "p@ss"},
		{url: "redis+sentinel://:pw@h1:1/m?sentinel_password=sp", sentinels: []string{"h1:1"}, master: "m", pw: "pw", sentPw: "sp"},
		{url: "rediss+sentinel://h1:1/m", sentinels: []string{"h1:1"}, master: "m", tls: true},
		{url: "redis+sentinel://h1:1", err: "master name"},
		{url: "redis+sentinel://h1:1/a/b", err: "master name"},
		{url: "redis+sentinel://h1:1,,h2:2/m", err: "empty sentinel"},
		{url: "redis+sentinel://h1:1/m?bogus=1", err: "unexpected option"},
		{url: "redis+sentinel://h1:1/m?master_name=x", err: "as the path"},
		{url: "redis+sentinel://h1:1/m?db=x", err: "database"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			o, err := parseSentinelURL(tc.url)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				if cerr := CheckRedisURL(tc.url); cerr == nil || !strings.Contains(cerr.Error(), "redis+sentinel://[user:password@]host:26379") {
					t.Fatalf("CheckRedisURL = %v, want the accepted forms", cerr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(o.SentinelAddrs) != fmt.Sprint(tc.sentinels) || o.MasterName != tc.master || o.DB != tc.db ||
				o.Username != tc.user || o.Password != tc.pw || o.SentinelPassword != tc.sentPw || (o.TLSConfig != nil) != tc.tls {
				t.Fatalf("got sentinels %v master %q db %d user %q pw %q sentinel pw %q tls %v", o.SentinelAddrs, o.MasterName, o.DB, o.Username, o.Password, o.SentinelPassword, o.TLSConfig != nil)
			}
			if err := CheckRedisURL(tc.url); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCheckRedisURLRedactsAndNamesForms(t *testing.T) {
	err := CheckRedisURL("127.0.0.1:6379")
	if err == nil || !strings.Contains(err.Error(), `"127.0.0.1:6379"`) || !strings.Contains(err.Error(), "redis://") {
		t.Fatalf("err = %v", err)
	}
	err = CheckRedisURL("redis+sentinel://u:secret@h:1")
	if err == nil || strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), "u:xxxxx@h:1") {
		t.Fatalf("err = %v, want the password hidden", err)
	}
}

// TestWaitReplicasShortfallRefusesPublish: with WaitReplicas set, a
// publish that fewer replicas confirm is an error (ErrNotReplicated, an
// engine.ErrNotDurable), not an acknowledgement.
func TestWaitReplicasShortfallRefusesPublish(t *testing.T) {
	rd := testproc.StartRedis(t) // no replica
	e := newEngine(t, rd.URL(), func(c *RedisConfig) { c.WaitReplicas, c.WaitTimeout = 1, 100*time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.Publish(ctx, "/w", []byte(`{}`))
	if !errors.Is(err, ErrNotReplicated) || !errors.Is(err, engine.ErrNotDurable) || !strings.Contains(err.Error(), "0 of 1 replicas within 100ms") {
		t.Fatalf("publish without a replica: %v, want ErrNotReplicated naming 0 of 1 replicas", err)
	}
}

// TestSentinelFailoverKeepsAcknowledged: on a primary with one replica
// behind three sentinels, with WaitReplicas 1, every acknowledged
// publication survives the primary's crash and the failover, and a
// subscriber on another engine receives each once, in order, without a
// gap (its pub/sub connection follows the new primary and catches up).
// The old primary, without persistence, comes back as the new primary's
// replica (Sentinel.RestartAsReplica says why).
func TestSentinelFailoverKeepsAcknowledged(t *testing.T) {
	s := testproc.StartSentinel(t, 1)
	pub := newEngine(t, s.URL(), func(c *RedisConfig) { c.WaitReplicas = 1 })
	sub := newEngine(t, s.URL(), nil)
	rec := run(t, sub)
	run(t, pub)
	subscribe(t, sub, "/fo")

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// publishUntil publishes until n are acknowledged and counts those
	// refused. A refusal is the engine keeping its word: a replica that
	// did not confirm within WaitTimeout (a loaded machine), or none yet.
	var acked []engine.Publication
	publishUntil := func(n int, what string) (refused int) {
		for len(acked) < n {
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			p, err := pub.Publish(pctx, "/fo", []byte(fmt.Sprintf(`{"n":%d}`, len(acked))))
			pcancel()
			switch {
			case err == nil:
				acked = append(acked, p)
			case errors.Is(err, engine.ErrNotDurable) || errors.Is(err, engine.ErrUnavailable):
				refused++
				if ctx.Err() != nil {
					t.Fatalf("publishes not acknowledged %s: %v", what, err)
				}
				time.Sleep(50 * time.Millisecond) // pace retries
			default:
				t.Fatalf("publish: %v", err)
			}
		}
		return refused
	}
	if r := publishUntil(20, "before the failover"); r > 0 {
		t.Logf("%d publishes refused before the failover", r)
	}

	old, err := s.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Server(old).Kill()
	if _, err := s.AwaitFailover(ctx, old); err != nil {
		t.Fatal(err)
	}
	// The promoted replica has no replica: publishes are refused, not
	// acknowledged, until the old primary is back as its replica.
	if err := s.RestartAsReplica(ctx, t, old); err != nil {
		t.Fatal(err)
	}
	refused := publishUntil(40, "again after the failover")
	t.Logf("%d publishes refused during the failover", refused)
	// Refused publishes were written by the primary and may have been
	// delivered too: deliveries are a superset of what was acknowledged,
	// once each, in order.
	last := acked[len(acked)-1].Offset
	waitFor(t, 20*time.Second, "the last acknowledged publication", func() bool {
		ps := rec.pubs("/fo")
		return len(ps) > 0 && ps[len(ps)-1].Offset >= last
	})
	// A gap first: it explains a delivery out of order (a new epoch).
	if g := rec.gaps("/fo"); len(g) != 0 {
		t.Fatalf("gaps reported: %v (events %v)", g, rec.all())
	}
	got := map[uint64]bool{}
	var prev uint64
	for _, p := range rec.pubs("/fo") {
		if p.Offset <= prev || p.Epoch != acked[0].Epoch {
			t.Fatalf("delivery %s/%d after offset %d (want increasing offsets on epoch %s; events %v)", p.Epoch, p.Offset, prev, acked[0].Epoch, rec.all())
		}
		prev, got[p.Offset] = p.Offset, true
	}
	for _, a := range acked {
		if !got[a.Offset] {
			t.Fatalf("acknowledged offset %d never delivered (delivered %v)", a.Offset, offsets(rec.pubs("/fo")))
		}
	}
}

// TestCatchUpDetectsReusedOffset: when a failover loses the last
// publication a node delivered and the new primary reuses its offset for
// another publication before the node reconnects, the catch-up must not
// take the new one for the one it delivered: it reports a gap (the
// subscribers are told) instead of dropping it silently.
func TestCatchUpDetectsReusedOffset(t *testing.T) {
	rd := testproc.StartRedis(t)
	proxy := testproc.StartFaultProxy(t, rd.Addr)
	sub := newEngine(t, "redis://"+proxy.Addr, nil)
	pub := newEngine(t, rd.URL(), nil)
	rec := run(t, sub)
	subscribe(t, sub, "/dv")
	sent := publish(t, pub, "/dv", 3)
	rec.waitPubs(t, "/dv", 3)
	proxy.Cut()
	waitFor(t, 10*time.Second, "the lost connection noticed", func() bool { return !sub.Ready() })
	// What a failover to a replica that lacked offset 3 leaves: the stream
	// and the offset one behind.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := pub.Client()
	key := pub.lay.streamKey("/dv")
	kept, err := c.XRange(ctx, key, "1-0", "2-0").Result()
	if err != nil || len(kept) != 2 {
		t.Fatalf("history: %v %v", kept, err)
	}
	if err := c.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	for _, e := range kept {
		if err := c.XAdd(ctx, &redis.XAddArgs{Stream: key, ID: e.ID, Values: e.Values}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.HSet(ctx, pub.lay.metaKey("/dv"), "o", 2).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "a later millisecond", func() bool { return time.Now().UnixMilli() > sent[2].Time+1 })
	reused := publish(t, pub, "/dv", 1)[0]
	if reused.Offset != 3 {
		t.Fatalf("offset %d, want 3 reused", reused.Offset)
	}
	proxy.Restore()
	waitFor(t, 10*time.Second, "the reused offset delivered or reported", func() bool {
		if len(rec.gaps("/dv")) > 0 {
			return true
		}
		ps := rec.pubs("/dv")
		return len(ps) > 3
	})
	if ps := rec.pubs("/dv"); len(ps) > 3 && string(ps[3].Payload) != string(reused.Payload) {
		t.Fatalf("delivered %q after the failover, want %q", ps[3].Payload, reused.Payload)
	}
}

// TestRedisClusterWaitReplicas: on a Redis Cluster, WAIT goes to the
// master of the channel's slot in the publish's pipeline: with a replica
// per master, publishes on channels of every shard are acknowledged; with
// none, refused.
func TestRedisClusterWaitReplicas(t *testing.T) {
	for _, tc := range []struct {
		replicas int
		ok       bool
	}{{1, true}, {0, false}} {
		t.Run(fmt.Sprintf("replicas=%d", tc.replicas), func(t *testing.T) {
			rc := testproc.StartRedisCluster(t, 3, tc.replicas)
			e := newEngine(t, rc.URL()+"?partitions=16", func(c *RedisConfig) { c.WaitReplicas, c.WaitTimeout = 1, 200*time.Millisecond })
			shards := map[string]bool{}
			for i := range 12 {
				ch := fmt.Sprintf("/wr/c%d", i)
				m, err := e.cc.MasterForKey(context.Background(), e.lay.metaKey(ch))
				if err != nil {
					t.Fatal(err)
				}
				shards[m.Options().Addr] = true
				var perr error
				// A replica may still be syncing just after the cluster formed.
				waitFor(t, 20*time.Second, "a publish answered as expected on "+ch, func() bool {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					_, perr = e.Publish(ctx, ch, []byte(`{}`))
					return (perr == nil) == tc.ok
				})
				if !tc.ok && !errors.Is(perr, ErrNotReplicated) {
					t.Fatalf("publish without replicas: %v, want ErrNotReplicated", perr)
				}
			}
			if len(shards) < 2 {
				t.Fatalf("channels on %d shard(s), want several", len(shards))
			}
		})
	}
}

// TestSentinelStaleAnswerDoesNotReachOldPrimary: a connection is dialed to
// the address a sentinel named; when that answer is stale by the time the
// connection is made (the sentinels failed over meanwhile, and the old
// primary came back, empty, on its address, as an operator restarting it
// does), the connection must not be used: publishes acknowledged there
// would start the channel on a new epoch on a server about to become a
// replica and lose them. Here the engine's sentinel link is slow (1s each
// way, a loaded host), so every answer is up to a second stale; every
// acknowledged publish must stay on the channel's epoch.
func TestSentinelStaleAnswerDoesNotReachOldPrimary(t *testing.T) {
	s := testproc.StartSentinel(t, 1)
	proxy := testproc.StartFaultProxy(t, s.Addrs[0])
	e := newEngine(t, "redis+sentinel://"+proxy.Addr+"/"+testproc.SentinelMaster, nil)
	run(t, e)
	epoch := publish(t, e, "/st", 3)[0].Epoch

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	old, err := s.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The replica has the channel (no WAIT here): the new primary keeps
	// its epoch.
	for _, srv := range s.Servers {
		if srv.Addr == old {
			continue
		}
		rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
		waitFor(t, 10*time.Second, "the replica has the channel", func() bool {
			o, _ := rc.HGet(ctx, e.lay.metaKey("/st"), "o").Result()
			return o == "3"
		})
		_ = rc.Close()
	}
	proxy.Delay(time.Second)
	s.Server(old).Kill()
	stop := make(chan struct{})
	type result struct {
		at  time.Duration
		pub engine.Publication
		err error
	}
	results := make(chan result, 1024)
	start := time.Now()
	// Publishers that keep dialing through the outage: some dials ask the
	// sentinel just before it switches and connect just after.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				pctx, pcancel := context.WithTimeout(ctx, 4*time.Second)
				p, err := e.Publish(pctx, "/st", []byte(`{}`))
				pcancel()
				results <- result{time.Since(start), p, err}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	if _, err := s.AwaitFailover(ctx, old); err != nil {
		t.Fatal(err)
	}
	s.Server(old).StartAgain(t)
	// Before the sentinels turn the old primary into a replica (about 10s).
	time.Sleep(6 * time.Second)
	close(stop)
	wg.Wait()
	close(results)
	acked, other := 0, 0
	for r := range results {
		if r.err != nil {
			continue
		}
		acked++
		if r.pub.Epoch != epoch {
			other++
			if other <= 3 {
				t.Errorf("at %v: publish acknowledged on epoch %s offset %d, want epoch %s (written to the restarted old primary)", r.at.Round(time.Millisecond), r.pub.Epoch, r.pub.Offset, epoch)
			}
		}
	}
	t.Logf("%d publishes acknowledged during and after the failover, %d on another epoch", acked, other)
	if t.Failed() {
		for i, p := range s.Sentinels {
			t.Logf("sentinel %d log:\n%s", i, p.Log.String())
		}
	}
	if acked == 0 {
		t.Fatal("no publish acknowledged after the failover")
	}
}

// TestSameEndpoint: the address a sentinel names is compared with the
// connection's remote address, a host name through the resolver.
func TestSameEndpoint(t *testing.T) {
	remote := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 6379}
	for _, tc := range []struct {
		host, port string
		want       bool
	}{
		{"127.0.0.1", "6379", true},
		{"127.0.0.1", "6380", false},
		{"127.0.0.2", "6379", false},
		{"::ffff:127.0.0.1", "6379", true},
		{"localhost", "6379", true},
		{"localhost", "6380", false},
	} {
		if got := sameEndpoint(context.Background(), tc.host, tc.port, remote); got != tc.want {
			t.Errorf("sameEndpoint(%s:%s, %v) = %v, want %v", tc.host, tc.port, remote, got, tc.want)
		}
	}
}
