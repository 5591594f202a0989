package cluster

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
)

// TestSweepBoundedInRedisBlackHole: when Redis stops answering (every
// byte held back), the sweeper still removes every expired session within
// one bounded sweep: record deletes go in one pipeline and unsubscribes
// run concurrently, under one time budget, not one timeout per session.
func TestSweepBoundedInRedisBlackHole(t *testing.T) {
	rd := testproc.StartRedis(t)
	proxy := testproc.StartFaultProxy(t, rd.Addr)
	e := newEngine(t, "redis://"+proxy.Addr, nil)
	id := "sweeper-" + t.Name()
	tag := NodeTag(id)
	b, err := broker.New(broker.Config{
		IDPrefix: tag, Engine: e, Logger: quiet,
		Timeout: 200 * time.Millisecond, MaxInterval: 500 * time.Millisecond, SweepInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	b.SetCluster(nil, NewSessionStore(e.Client(), "", tag, time.Minute))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	srv := httptest.NewServer(b)
	client := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	t.Cleanup(func() {
		client.CloseIdleConnections()
		srv.Close()
		cancel()
		_ = e.Close()
		<-done
	})
	peer := &bayeuxtest.Peer{T: t, URL: srv.URL, Client: client}
	const n = 10
	for i := range n {
		cid := peer.Handshake(nil)
		peer.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": cid, "subscription": fmt.Sprintf("/sweep/%d", i)})
	}
	if got := b.Stats().Sessions; got != n {
		t.Fatalf("%d sessions, want %d", got, n)
	}
	proxy.Delay(time.Hour) // a black hole: connections stay open, nothing comes back
	start := time.Now()
	// Expiry takes MaxInterval; a sweep's backend work at most 5s, so the
	// sessions that expire during one sweep are removed by the next: 12s
	// at most, where serial removal took 3-5s per session.
	waitFor(t, 12*time.Second, "every expired session removed", func() bool { return b.Stats().Sessions == 0 })
	t.Logf("%d expired sessions removed %v after Redis went silent", n, time.Since(start).Round(time.Millisecond))
}
