package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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
//
// Sessions expire only once all are set up, however long that takes: each
// holds a connect (a session with a held connect does not expire) until
// Redis goes silent, then all are released together. MaxInterval is the
// client's timeout, so no session can expire between two requests of its
// setup unless a request failed anyway.
func TestSweepBoundedInRedisBlackHole(t *testing.T) {
	const (
		n           = 10
		maxInterval = 5 * time.Second
	)
	rd := testproc.StartRedis(t)
	proxy := testproc.StartFaultProxy(t, rd.Addr)
	e := newEngine(t, "redis://"+proxy.Addr, nil)
	id := "sweeper-" + t.Name()
	tag := NodeTag(id)
	b, err := broker.New(broker.Config{
		IDPrefix: tag, Engine: e, Logger: quiet,
		Timeout: 2 * time.Minute, MaxInterval: maxInterval, SweepInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	b.SetCluster(nil, NewSessionStore(e.Client(), "", tag, time.Minute))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	srv := httptest.NewServer(b)
	client := &http.Client{Transport: &http.Transport{}, Timeout: maxInterval}
	holdClient := &http.Client{Transport: &http.Transport{}} // held connects: ended by hold
	hold, release := context.WithCancel(context.Background())
	var held sync.WaitGroup
	t.Cleanup(func() {
		release()
		held.Wait()
		client.CloseIdleConnections()
		holdClient.CloseIdleConnections()
		srv.Close()
		cancel()
		_ = e.Close()
		<-done
	})
	peer := &bayeuxtest.Peer{T: t, URL: srv.URL, Client: client}
	for i := range n {
		cid := peer.Handshake(nil)
		peer.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": cid, "subscription": fmt.Sprintf("/sweep/%d", i)})
		held.Go(func() { holdConnect(hold, holdClient, srv.URL, cid) })
	}
	// Each session's first connect (in Handshake) and its held one.
	waitFor(t, 10*time.Second, "every session's connect held", func() bool { return b.Stats().Connects == 2*n })
	if st := b.Stats(); st.Sessions != n || st.Expired != 0 {
		t.Fatalf("%d sessions (%d expired), want %d", st.Sessions, st.Expired, n)
	}
	proxy.Delay(time.Hour) // a black hole: connections stay open, nothing comes back
	release()
	start := time.Now()
	// Expiry takes MaxInterval; a sweep's backend work at most 5s, so the
	// sessions that expire during one sweep are removed by the next: 12s
	// at most after expiry, where serial removal took 3-5s per session.
	waitFor(t, maxInterval+12*time.Second, "every expired session removed", func() bool { return b.Stats().Sessions == 0 })
	t.Logf("%d expired sessions removed %v after Redis went silent and their connects ended", n, time.Since(start).Round(time.Millisecond))
}

// holdConnect sends a /meta/connect for cid and waits until ctx ends it
// (the broker holds it for its Timeout).
func holdConnect(ctx context.Context, c *http.Client, url, cid string) {
	body := fmt.Sprintf(`[{"channel":"/meta/connect","clientId":%q,"connectionType":"long-polling"}]`, cid)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if resp, err := c.Do(req); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
}
