package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestLockOrder drives, at once, every path that nests the broker's locks
// (docs/architecture.md, "Lock order"): held long-polls answered in their
// handler and parked, websockets with and without acknowledged delivery,
// fan-out from concurrent publishers, replaced connects, released
// connects, expiry, disconnects, and finally Shutdown answering whatever
// is held. Under -race it checks the locking; a lock taken against the
// order shows up as a deadlock: the test fails, with every goroutine's
// stack, if the clients do not all finish in time.
func TestLockOrder(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) {
		c.Timeout = 400 * time.Millisecond // held connects time out during the run
		c.Extensions = []Extension{testAck{}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var answered atomic.Int64
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	postJSON := func(client *http.Client, msgs ...msg) []msg {
		b, _ := json.Marshal(msgs)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, tb.url, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var out []msg
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return out
	}
	// Long-polling subscribers: keep-alive connections, so that connects
	// held past parkAfter are parked; one session is replaced, expired and
	// released by the debug operations below.
	var lpIDs []string
	for i := 0; i < 3; i++ {
		id := tb.handshake(t, nil)
		tb.subscribe(t, id, "/lo/*")
		lpIDs = append(lpIDs, id)
		client := &http.Client{Transport: &http.Transport{}}
		run(func() {
			for ctx.Err() == nil {
				if len(postJSON(client, msg{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"})) > 0 {
					answered.Add(1)
				}
			}
		})
	}
	// Websocket subscribers, acknowledged and pushed; each sends a second
	// connect now and then, replacing the one it holds.
	for _, ack := range []bool{false, true} {
		ws := tb.wsDial(t)
		var ext msg
		if ack {
			ext = msg{"ack": true}
		}
		id := wsHandshake(t, ws, ext)
		ws.send(msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/lo/**"})
		connect, _ := json.Marshal([]msg{{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket"}})
		run(func() {
			for n := 0; ctx.Err() == nil; n++ {
				if ws.c.Write(ctx, websocket.MessageText, connect) != nil {
					return
				}
				if n%3 == 0 { // a replacing connect
					_ = ws.c.Write(ctx, websocket.MessageText, connect)
				}
				rctx, rcancel := context.WithTimeout(ctx, time.Second)
				_, b, err := ws.c.Read(rctx)
				rcancel()
				if err != nil && ctx.Err() == nil && !strings.Contains(err.Error(), "deadline") {
					return
				}
				if bytes.Contains(b, []byte("/meta/connect")) {
					answered.Add(1)
				}
			}
		})
	}
	// Publishers on two channels.
	for _, ch := range []string{"/lo/a", "/lo/b"} {
		id := tb.handshake(t, nil)
		client := &http.Client{Transport: &http.Transport{}}
		run(func() {
			for i := 0; ctx.Err() == nil; i++ {
				postJSON(client, msg{"channel": ch, "clientId": id, "data": i})
			}
		})
	}
	// Session operations against the long-polling sessions.
	run(func() {
		ops := []SessionOpKind{OpReleaseConnect, OpDropNextConnect, OpReleaseConnect, OpExpire}
		for i := 0; ctx.Err() == nil; i++ {
			_, _ = tb.LocalSessionOp(lpIDs[i%len(lpIDs)], ops[i%len(ops)])
			time.Sleep(50 * time.Millisecond)
		}
	})
	// Sessions that come and go.
	run(func() {
		client := &http.Client{Transport: &http.Transport{}}
		for ctx.Err() == nil {
			r := postJSON(client, msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}})
			if len(r) != 1 || r[0]["clientId"] == nil {
				continue
			}
			id := r[0]["clientId"]
			postJSON(client, msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/lo/a"})
			postJSON(client, msg{"channel": "/meta/disconnect", "clientId": id})
		}
	})
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	_ = tb.Shutdown(sctx)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("clients still blocked 20 s after the run (a lock taken against the order?):\n%s", buf[:runtime.Stack(buf, true)])
	}
	if answered.Load() == 0 {
		t.Fatal("no connect was answered")
	}
}
