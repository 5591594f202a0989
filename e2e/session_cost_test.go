package e2e

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
	"github.com/bayeux-cluster/bayeux/pkg/client"
)

// TestSessionRecordCost measures what the session records of adoption
// (section 12 of the architecture) cost Redis. A record write is one run
// of the save script, whose only HSET is the record's (publishes HSET only
// when a channel is created, which happens before measuring):
//   - plain sessions are written at handshake and subscription changes,
//     never per message;
//   - ack sessions are written once per delivered batch, so at most once
//     per /meta/connect, whatever the message rate.
func TestSessionRecordCost(t *testing.T) {
	c := testproc.StartCluster(t, 3, "--max-interval", "120s", "--demo=false")
	rc := redis.NewClient(&redis.Options{Addr: c.Redis.Addr})
	defer rc.Close()
	ctx := context.Background()
	const ch = "/cost/records"

	pub := &bayeuxtest.Peer{T: t, URL: c.URL()}
	pubID := pub.Handshake(nil)
	publish := func(n int, every time.Duration) {
		for i := range n {
			pub.MustSucceed(bayeuxtest.Msg{"channel": ch, "clientId": pubID, "data": i})
			time.Sleep(every)
		}
	}
	publish(1, 0) // creates the channel (its one HSET)

	// Plain sessions: 30 subscribers, then 200 publishes.
	for i := range 30 {
		p := &bayeuxtest.Peer{T: t, URL: c.Nodes[i%len(c.Nodes)].URL}
		id := p.Handshake(nil)
		p.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": ch})
	}
	before := commandStats(t, ctx, rc)
	publish(200, 0)
	plain := commandStats(t, ctx, rc)["hset"] - before["hset"]
	t.Logf("plain sessions: %d record writes for 30 sessions x 200 publishes", plain)
	if plain != 0 {
		t.Errorf("plain sessions: %d record writes during publishes, want 0", plain)
	}

	// Ack sessions: 10 long-polling subscribers through the balancer.
	var received atomic.Int64
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var clients []*client.Client
	for range 10 {
		cl, err := client.Dial(cctx, client.Config{URL: c.URL(), Transports: []string{protocol.LongPolling}, Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, cl)
		if _, err := cl.Subscribe(cctx, ch, func(*client.Message) { received.Add(1) }); err != nil {
			t.Fatal(err)
		}
		if !cl.AckEnabled() {
			t.Fatal("ack extension not negotiated")
		}
	}
	defer func() {
		for _, cl := range clients {
			_ = cl.Close(context.Background())
		}
	}()
	connects := func() float64 {
		total := 0.0
		for _, n := range c.Nodes {
			total += sum(n.Metrics(t), "bayeux_connects_total")
		}
		return total
	}
	before = commandStats(t, ctx, rc)
	c0 := connects()
	const msgs = 300
	publish(msgs, 2*time.Millisecond)
	bayeuxtest.Eventually(t, 20*time.Second, func() error {
		if n := received.Load(); n < 10*msgs {
			return fmt.Errorf("%d of %d deliveries", n, 10*msgs)
		}
		return nil
	})
	writes := commandStats(t, ctx, rc)["hset"] - before["hset"]
	// Every forwarded connect is counted on the node the client reached
	// and on the owner: halve for an upper bound of client connects.
	conn := connects() - c0
	t.Logf("ack sessions: %d record writes for 10 sessions x %d messages (%.2f per message per session), %.0f connects counted",
		writes, msgs, float64(writes)/float64(10*msgs), conn)
	if float64(writes) > conn {
		t.Errorf("ack sessions: %d record writes > %.0f connects: more than one per delivered batch", writes, conn)
	}
	if writes == 0 {
		t.Errorf("ack sessions: no record writes: batches are not persisted before delivery")
	}
}
