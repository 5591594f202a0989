package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

func TestRedisPublishAssignsIncreasingOffsetsInOneEpoch(t *testing.T) {
	rd := testproc.StartRedis(t)
	e := newEngine(t, rd.URL(), nil)
	for _, ch := range []string{"/a", "/a/b", "/x/y/z"} {
		t.Run(ch, func(t *testing.T) {
			pubs := publish(t, e, ch, 20)
			if got := offsets(pubs); !slices.Equal(got, seq(1, 20)) {
				t.Fatalf("offsets %v, want 1..20", got)
			}
			for _, p := range pubs {
				if p.Epoch == "" || p.Epoch != pubs[0].Epoch || p.Channel != ch {
					t.Fatalf("publication %+v: want channel %s and the stable epoch %q", p, ch, pubs[0].Epoch)
				}
			}
		})
	}
}

func TestRedisSecondNodeReceivesEachPublicationOnceInOrder(t *testing.T) {
	rd := testproc.StartRedis(t)
	a := newEngine(t, rd.URL(), nil)
	b := newEngine(t, rd.URL(), nil)
	recB := run(t, b)
	// "/a/b" reaches b on three of its Redis channels.
	subscribe(t, b, "/a/**", "/a/b", "/a/*")
	const n = 200
	sent := publish(t, a, "/a/b", n)
	recB.waitPubs(t, "/a/b", n)
	// A marker after them: any late duplicate arrives before it (one
	// connection, Redis order).
	publish(t, a, "/a/b", 1)
	got := recB.waitPubs(t, "/a/b", n+1)
	if !slices.Equal(offsets(got), seq(1, n+1)) {
		t.Fatalf("b received %d publications with offsets %v, want each of 1..%d once in order", len(got), offsets(got), n+1)
	}
	for i, p := range got[:n] {
		if p.Epoch != sent[i].Epoch || string(p.Payload) != string(sent[i].Payload) {
			t.Fatalf("publication %d: got %s %q, sent %s %q", i, p.Epoch, p.Payload, sent[i].Epoch, sent[i].Payload)
		}
	}
	if ev := recB.all(); len(ev) != n+1 {
		t.Fatalf("b's handler was called %d times, want %d (no gaps, nothing else): %v", len(ev), n+1, ev[len(ev)-1])
	}
}

func TestRedisSubscribeReturnsAfterConfirmation(t *testing.T) {
	rd := testproc.StartRedis(t)
	a := newEngine(t, rd.URL(), nil)
	b := newEngine(t, rd.URL(), nil)
	recB := run(t, b)
	for i := 0; i < 50; i++ {
		pattern, ch := fmt.Sprintf("/fresh/%d", i), fmt.Sprintf("/fresh/%d", i)
		if i%2 == 1 {
			pattern, ch = fmt.Sprintf("/fresh/%d/**", i), fmt.Sprintf("/fresh/%d/x", i)
		}
		subscribe(t, b, pattern)
		publish(t, a, ch, 1) // right after Subscribe returned
		recB.waitPubs(t, ch, 1)
	}
}

func TestRedisSubscribeWithoutRunTimesOut(t *testing.T) {
	rd := testproc.StartRedis(t)
	e := newEngine(t, rd.URL(), func(c *RedisConfig) { c.SubscribeTimeout = 200 * time.Millisecond })
	start := time.Now()
	err := e.Subscribe(context.Background(), "/nobody/reads")
	if !errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("Subscribe with no Run reading confirmations: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Subscribe took %v, want about SubscribeTimeout", d)
	}
}

func TestRedisHistory(t *testing.T) {
	rd := testproc.StartRedis(t)
	e := newEngine(t, rd.URL(), nil)
	const ch = "/h"
	sent := publish(t, e, ch, 10)
	epoch := sent[0].Epoch
	tests := []struct {
		name    string
		channel string
		after   engine.Position
		limit   int
		want    []uint64
		wantErr error
	}{
		{"everything from the start", ch, engine.Position{Epoch: epoch}, 0, seq(1, 10), nil},
		{"the rest after a position", ch, engine.Position{Epoch: epoch, Offset: 3}, 0, seq(4, 10), nil},
		{"after the newest", ch, engine.Position{Epoch: epoch, Offset: 10}, 0, nil, nil},
		{"limit honoured", ch, engine.Position{Epoch: epoch, Offset: 4}, 2, []uint64{5, 6}, nil},
		{"limit larger than the rest", ch, engine.Position{Epoch: epoch, Offset: 8}, 5, []uint64{9, 10}, nil},
		{"wrong epoch", ch, engine.Position{Epoch: "x" + epoch, Offset: 3}, 0, nil, engine.ErrPositionGone},
		{"unknown channel from 0", "/none", engine.Position{}, 0, nil, nil},
		{"unknown channel, later position", "/none", engine.Position{Epoch: "e", Offset: 4}, 0, nil, engine.ErrPositionGone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.History(context.Background(), tc.channel, tc.after, tc.limit)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("History(%s, %v, %d): error %v, want %v", tc.channel, tc.after, tc.limit, err, tc.wantErr)
			}
			if !slices.Equal(offsets(got), tc.want) {
				t.Fatalf("History(%s, %v, %d) = %v, want %v", tc.channel, tc.after, tc.limit, offsets(got), tc.want)
			}
			for _, p := range got {
				s := sent[p.Offset-1]
				if p.Channel != ch || p.Epoch != epoch || string(p.Payload) != string(s.Payload) {
					t.Fatalf("history entry %s/%d %q differs from the publication %q", p.Epoch, p.Offset, p.Payload, s.Payload)
				}
			}
		})
	}
}

func TestRedisHistoryGoneAfterTrimming(t *testing.T) {
	rd := testproc.StartRedis(t)
	e := newEngine(t, rd.URL(), func(c *RedisConfig) { c.HistorySize = 10 })
	const ch = "/trim"
	const n = 500
	sent := publish(t, e, ch, n)
	epoch := sent[0].Epoch
	ctx := context.Background()
	// Trimming is approximate (MAXLEN ~): find the oldest retained entry.
	first, err := e.Client().XRangeN(ctx, e.lay.streamKey(ch), "-", "+", 1).Result()
	if err != nil || len(first) != 1 {
		t.Fatalf("oldest stream entry: %v, %v", first, err)
	}
	oldest, err := parseStreamID(first[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if oldest < 3 || oldest > n-9 {
		t.Fatalf("oldest retained offset %d: want the stream trimmed (to at least the last 10)", oldest)
	}
	tests := []struct {
		name    string
		after   uint64
		want    []uint64
		wantErr error
	}{
		{"from the start", 0, nil, engine.ErrPositionGone},
		{"one before the oldest's predecessor", oldest - 2, nil, engine.ErrPositionGone},
		{"just before the oldest", oldest - 1, seq(oldest, oldest+4), nil},
		{"the last five", n - 5, seq(n-4, n), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.History(ctx, ch, engine.Position{Epoch: epoch, Offset: tc.after}, 5)
			if !errors.Is(err, tc.wantErr) || !slices.Equal(offsets(got), tc.want) {
				t.Fatalf("History(after %d) = %v, %v; want %v, %v", tc.after, offsets(got), err, tc.want, tc.wantErr)
			}
		})
	}
}

// deleteChannel removes a channel's keys, as if Redis lost them.
func deleteChannel(t *testing.T, e *Redis, ch string) {
	t.Helper()
	if err := e.Client().Del(context.Background(), e.lay.metaKey(ch), e.lay.streamKey(ch)).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestRedisHistoryGoneAfterKeysDeleted(t *testing.T) {
	rd := testproc.StartRedis(t)
	e := newEngine(t, rd.URL(), nil)
	ctx := context.Background()
	const ch = "/lost"
	old := publish(t, e, ch, 5)[0].Epoch
	deleteChannel(t, e, ch)
	if got, err := e.History(ctx, ch, engine.Position{Epoch: old, Offset: 3}, 0); !errors.Is(err, engine.ErrPositionGone) {
		t.Fatalf("History after the keys were deleted = %v, %v; want ErrPositionGone", offsets(got), err)
	}
	p := publish(t, e, ch, 1)[0]
	if p.Epoch == old || p.Offset != 1 {
		t.Fatalf("first publication after the loss: %s/%d, want a new epoch (old %s) at offset 1", p.Epoch, p.Offset, old)
	}
	if got, err := e.History(ctx, ch, engine.Position{Epoch: old, Offset: 1}, 0); !errors.Is(err, engine.ErrPositionGone) {
		t.Fatalf("History in the old epoch = %v, %v; want ErrPositionGone", offsets(got), err)
	}
	if got, err := e.History(ctx, ch, engine.Position{Epoch: p.Epoch}, 0); err != nil || !slices.Equal(offsets(got), []uint64{1}) {
		t.Fatalf("History in the new epoch = %v, %v; want [1]", offsets(got), err)
	}
}

func TestRedisLostChannelReportsGapAndNewEpoch(t *testing.T) {
	rd := testproc.StartRedis(t)
	a := newEngine(t, rd.URL(), nil)
	b := newEngine(t, rd.URL(), nil)
	recB := run(t, b)
	const ch = "/e/1"
	subscribe(t, b, ch, "/e/**")
	old := publish(t, a, ch, 3)
	recB.waitPubs(t, ch, 3)
	deleteChannel(t, a, ch)
	p := publish(t, a, ch, 1)[0]
	if p.Epoch == old[0].Epoch || p.Offset != 1 {
		t.Fatalf("publication after the loss: %s/%d, want a new epoch at offset 1", p.Epoch, p.Offset)
	}
	got := recB.waitPubs(t, ch, 4)
	publish(t, a, ch, 1) // marker: nothing about the loss is still in flight
	got = recB.waitPubs(t, ch, 5)
	if len(got) != 5 || got[3].Epoch != p.Epoch || got[3].Offset != 1 || got[4].Offset != 2 {
		t.Fatalf("b received %v, want 1..3 in the old epoch then 1, 2 in the new one", recB.all())
	}
	gaps := recB.gaps(ch)
	want := engine.Position{Epoch: old[0].Epoch, Offset: 3}
	if len(gaps) != 1 || gaps[0].from != want || gaps[0].to.Epoch != p.Epoch {
		t.Fatalf("gaps on %s: %v, want one from %v to the new epoch %s", ch, gaps, want, p.Epoch)
	}
	ev := recB.all()
	if ev[3].pub != nil {
		t.Fatalf("events %v: want the gap reported before the new epoch's first publication", ev)
	}
}

func TestRedisUnreachableReturnsErrUnavailable(t *testing.T) {
	rd := testproc.StartRedis(t)
	px := testproc.StartProxy(t, rd.Addr)
	e := newEngine(t, "redis://"+px.Addr, nil)
	publish(t, e, "/u", 1)
	px.Cut()
	tests := []struct {
		name string
		op   func(context.Context) error
	}{
		{"Publish", func(ctx context.Context) error {
			_, err := e.Publish(ctx, "/u", []byte(`{}`))
			return err
		}},
		{"History", func(ctx context.Context) error {
			_, err := e.History(ctx, "/u", engine.Position{}, 0)
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			err := tc.op(ctx)
			d := time.Since(start)
			if !errors.Is(err, engine.ErrUnavailable) {
				t.Fatalf("%s with Redis unreachable: %v, want an error wrapping ErrUnavailable", tc.name, err)
			}
			if d > 3*time.Second {
				t.Fatalf("%s took %v to fail, want under 3s", tc.name, d)
			}
		})
	}
}

// TestRedisCatchUpAfterReconnect: after each of two outages in a row,
// what was published meanwhile is caught up from history.
func TestRedisCatchUpAfterReconnect(t *testing.T) {
	rd := testproc.StartRedis(t)
	a := newEngine(t, rd.URL(), nil)
	px := testproc.StartProxy(t, rd.Addr)
	b := newEngine(t, "redis://"+px.Addr, nil)
	recB := run(t, b)
	const ch = "/t/x"
	subscribe(t, b, ch, "/w/**")
	publish(t, a, ch, 3)
	recB.waitPubs(t, ch, 3) // "/t/x" is now tracked by b
	want := uint64(3)
	for outage := 1; outage <= 2; outage++ {
		px.Cut()
		waitFor(t, 5*time.Second, "b to notice the lost connection", func() bool { return !b.Ready() })
		publish(t, a, ch, 5) // during the cut
		px.Restore()
		waitFor(t, 10*time.Second, "b to reconnect", b.Ready)
		recB.waitPubs(t, ch, int(want)+5)
		publish(t, a, ch, 1) // marker
		want += 6
		got := recB.waitPubs(t, ch, int(want))
		if !slices.Equal(offsets(got), seq(1, want)) {
			t.Fatalf("outage %d: b received offsets %v, want 1..%d once each in order", outage, offsets(got), want)
		}
		if g := recB.gaps(ch); len(g) != 0 {
			t.Fatalf("outage %d: gaps %v on %s, whose history was complete", outage, g, ch)
		}
		if g := recB.gaps("/w/**"); len(g) != outage {
			t.Fatalf("outage %d: gaps on the wildcard /w/**: %v, want one per outage", outage, g)
		}
	}
}

// TestRedisCatchUpFollowsNewEpoch: the channel's history was lost while
// b was disconnected (a failover to a replica that had none of it) and
// publications of a new epoch were made meanwhile. b reports the gap and
// then delivers the new epoch's publications from its start, in order,
// instead of starting again at the next live one (which would lose those
// made while it was away as well).
func TestRedisCatchUpFollowsNewEpoch(t *testing.T) {
	rd := testproc.StartRedis(t)
	a := newEngine(t, rd.URL(), nil)
	px := testproc.StartProxy(t, rd.Addr)
	b := newEngine(t, "redis://"+px.Addr, nil)
	recB := run(t, b)
	const ch = "/t/epoch"
	subscribe(t, b, ch)
	publish(t, a, ch, 3)
	recB.waitPubs(t, ch, 3)
	px.Cut()
	waitFor(t, 5*time.Second, "b to notice the lost connection", func() bool { return !b.Ready() })
	if err := a.client.Del(context.Background(), a.lay.metaKey(ch), a.lay.streamKey(ch)).Err(); err != nil {
		t.Fatal(err)
	}
	publish(t, a, ch, 3) // a new epoch, offsets 1..3, while b is away
	px.Restore()
	waitFor(t, 10*time.Second, "b to reconnect", b.Ready)
	publish(t, a, ch, 1) // live, offset 4
	got := recB.waitPubs(t, ch, 7)
	if len(recB.gaps(ch)) == 0 {
		t.Fatalf("no gap reported on %s, whose history was lost", ch)
	}
	tail := got[3:]
	if !slices.Equal(offsets(tail), seq(1, 4)) || tail[0].Epoch == got[0].Epoch || tail[3].Epoch != tail[0].Epoch {
		t.Fatalf("after the lost history b received %v (epochs %s, %s), want offsets 1..4 of one new epoch", offsets(tail), got[0].Epoch, tail[0].Epoch)
	}
}

// TestRedisCatchUpWaitsForHistory: the pub/sub connection can come back
// before history reads do (a Sentinel failover: the subscription reaches
// the new primary while commands still dial the old one). The catch-up
// retries the read instead of reporting a gap, which would end every
// session on the channel. History is made unreadable with an ACL (XRANGE
// denied) while the connection is cut, and readable again once the
// catch-up has been refused at least twice.
func TestRedisCatchUpWaitsForHistory(t *testing.T) {
	rd := testproc.StartRedis(t)
	admin := redis.NewClient(&redis.Options{Addr: rd.Addr})
	t.Cleanup(func() { _ = admin.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newEngine(t, rd.URL(), nil)
	px := testproc.StartProxy(t, rd.Addr)
	b := newEngine(t, "redis://"+px.Addr, nil)
	recB := run(t, b)
	const ch = "/t/slow-history"
	subscribe(t, b, ch)
	publish(t, a, ch, 2)
	recB.waitPubs(t, ch, 2)
	px.Cut()
	waitFor(t, 5*time.Second, "b to notice the lost connection", func() bool { return !b.Ready() })
	publish(t, a, ch, 3) // 3..5, during the cut
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "-xrange").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, "ACL", "LOG", "RESET").Err(); err != nil {
		t.Fatal(err)
	}
	px.Restore()
	waitFor(t, 10*time.Second, "b's catch-up to be refused twice", func() bool {
		log, err := admin.Do(ctx, "ACL", "LOG").Slice()
		if err != nil || len(log) == 0 {
			return false
		}
		entry, _ := log[0].(map[any]any) // RESP3
		count, _ := entry["count"].(int64)
		return count >= 2
	})
	if g := recB.gaps(ch); len(g) != 0 {
		t.Fatalf("gap %v reported while history was only unreadable for a moment", g)
	}
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "+xrange").Err(); err != nil {
		t.Fatal(err)
	}
	got := recB.waitPubs(t, ch, 5)
	if !slices.Equal(offsets(got), seq(1, 5)) || len(recB.gaps(ch)) != 0 {
		t.Fatalf("b received offsets %v and gaps %v, want 1..5 and no gap", offsets(got), recB.gaps(ch))
	}
}

// A concrete channel this node subscribed to but has not yet received
// anything on is not "tracked"; publications on it during a lost
// connection must still be delivered after reconnecting, or reported as a
// gap, never dropped silently.
func TestRedisReconnectDoesNotSilentlyDropOnUnseenChannel(t *testing.T) {
	rd := testproc.StartRedis(t)
	a := newEngine(t, rd.URL(), nil)
	px := testproc.StartProxy(t, rd.Addr)
	b := newEngine(t, "redis://"+px.Addr, nil)
	recB := run(t, b)
	const ch = "/quiet"
	subscribe(t, b, ch)
	px.Cut()
	waitFor(t, 5*time.Second, "b to notice the lost connection", func() bool { return !b.Ready() })
	publish(t, a, ch, 3) // 1..3, acknowledged to the publisher during the cut
	px.Restore()
	waitFor(t, 10*time.Second, "b to reconnect", b.Ready)
	publish(t, a, ch, 1) // 4
	publish(t, a, ch, 1) // marker 5
	// Either all five arrive, once and in order, or the loss is reported.
	waitFor(t, 5*time.Second, "all five publications or a gap", func() bool {
		return len(recB.pubs(ch)) >= 5 || len(recB.gaps(ch)) > 0
	})
	if got := recB.pubs(ch); len(recB.gaps(ch)) == 0 && !slices.Equal(offsets(got), seq(1, 5)) {
		t.Fatalf("b received offsets %v on %s and no gap; publications 1..3 made during the cut were lost silently (events: %v)",
			offsets(got), ch, recB.all())
	}
}

// Publications made while this node had no subscription matching the
// channel must not be delivered when it subscribes again, nor reported as
// a gap (the broker ends every subscribed session on a gap).
func TestRedisResubscribeDoesNotReplayUnsubscribedPeriod(t *testing.T) {
	tests := []struct {
		name        string
		historySize int
		meanwhile   int // publications while b is not subscribed
	}{
		{"still in history", 1000, 2},
		{"trimmed from history", 10, 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rd := testproc.StartRedis(t)
			size := func(c *RedisConfig) { c.HistorySize = tc.historySize }
			a := newEngine(t, rd.URL(), size)
			b := newEngine(t, rd.URL(), size)
			recB := run(t, b)
			const ch = "/re"
			subscribe(t, b, ch)
			publish(t, a, ch, 1)
			recB.waitPubs(t, ch, 1)
			if err := b.Unsubscribe(context.Background(), ch); err != nil {
				t.Fatal(err)
			}
			// Unsubscribe returns once the command is sent: wait until
			// Redis has applied it, so nothing below can legitimately
			// reach b.
			waitFor(t, 5*time.Second, "Redis to drop b's subscription", func() bool {
				n, err := a.Client().PubSubNumSub(context.Background(), b.lay.psChan(0, ch)).Result()
				return err == nil && n[b.lay.psChan(0, ch)] == 0
			})
			publish(t, a, ch, tc.meanwhile)
			subscribe(t, b, ch)
			last := publish(t, a, ch, 1)[0].Offset
			got := recB.waitPubs(t, ch, 2)
			if !slices.Equal(offsets(got), []uint64{1, last}) || len(recB.gaps(ch)) != 0 {
				ev := recB.all()
				if len(ev) > 6 {
					ev = append(ev[:3], ev[len(ev)-3:]...)
				}
				t.Fatalf("after unsubscribe and subscribe again, b got %d publications and %d gaps (first and last events: %v); "+
					"want offsets [1 %d] only: 2..%d were published while b was not subscribed",
					len(got), len(recB.gaps(ch)), ev, last, last-1)
			}
		})
	}
}

// Run's contract: it delivers until ctx is done. The broker (and
// cmd/node's shutdown) waits for Run to return after cancelling ctx.
func TestRedisRunReturnsPromptlyWhenContextEnds(t *testing.T) {
	rd := testproc.StartRedis(t)
	e := newEngine(t, rd.URL(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.Run(ctx, &recorder{}); close(done) }()
	subscribe(t, e, "/r") // Run is now blocked reading the pub/sub connection
	start := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(time.Second):
		_ = e.Close()
		<-done
		t.Fatalf("Run had not returned %v after its context was cancelled, want under 1s (it ended only on Close)", time.Since(start).Round(time.Millisecond))
	}
}

func TestNodeTag(t *testing.T) {
	seen := map[string]string{}
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("node-%d", i)
		tag := NodeTag(id)
		if tag != NodeTag(id) {
			t.Fatalf("NodeTag(%q) is not deterministic", id)
		}
		if len(tag) != TagLen {
			t.Fatalf("NodeTag(%q) = %q: length %d, want %d", id, tag, len(tag), TagLen)
		}
		for _, c := range tag {
			if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyz234567", c) {
				t.Fatalf("NodeTag(%q) = %q: %q is not in the (lower-case RFC 4648) base32 alphabet", id, tag, c)
			}
		}
		if other, dup := seen[tag]; dup {
			t.Fatalf("NodeTag(%q) == NodeTag(%q) == %q", id, other, tag)
		}
		seen[tag] = id
	}
}
