package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
	"github.com/coder/websocket"
)

func wsHandshake(t *testing.T, ws *wsClient, ext msg) string {
	t.Helper()
	hs := msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"websocket"}, "id": "1"}
	if ext != nil {
		hs["ext"] = ext
	}
	ws.send(hs)
	got := ws.recvUntil(2*time.Second, func(m []msg) bool { return find(m, "/meta/handshake") != nil })
	r := find(got, "/meta/handshake")
	if r["successful"] != true {
		t.Fatalf("ws handshake: %v", r)
	}
	return r["clientId"].(string)
}

func TestWebSocketPushAndHeldConnect(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.Timeout = 400 * time.Millisecond })
	ws := tb.wsDial(t)
	id := wsHandshake(t, ws, nil)
	// Many messages in one frame: first connect (answered at once) and a
	// subscribe.
	ws.send(msg{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket", "id": "2"},
		msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/ws/*", "id": "3"})
	got := ws.recvUntil(2*time.Second, func(m []msg) bool {
		return find(m, "/meta/connect") != nil && find(m, "/meta/subscribe") != nil
	})
	if find(got, "/meta/subscribe")["successful"] != true {
		t.Fatalf("subscribe over ws: %v", got)
	}
	// Hold a connect, then publish from an HTTP client: the delivery is
	// pushed before the connect's timeout.
	ws.send(msg{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket", "id": "4"})
	pub := tb.handshake(t, nil)
	start := time.Now()
	tb.publish(t, pub, "/ws/a", "hello")
	got = ws.recvUntil(2*time.Second, func(m []msg) bool { return find(m, "/ws/a") != nil })
	if find(got, "/ws/a")["data"] != "hello" || time.Since(start) > 300*time.Millisecond {
		t.Fatalf("push: %v after %v", got, time.Since(start))
	}
	// The held connect is answered at its timeout.
	got = ws.recvUntil(2*time.Second, func(m []msg) bool { return find(m, "/meta/connect") != nil })
	if r := find(got, "/meta/connect"); r["successful"] != true || r["id"] != "4" {
		t.Fatalf("connect reply: %v", r)
	}
}

func TestWebSocketUnknownClient(t *testing.T) {
	tb := newTestBroker(t, nil)
	ws := tb.wsDial(t)
	ws.send(msg{"channel": "/meta/connect", "clientId": "nosuchclient", "connectionType": "websocket"})
	got := ws.recvUntil(2*time.Second, func(m []msg) bool { return len(m) > 0 })
	adv, _ := got[0]["advice"].(map[string]any)
	if got[0]["successful"] != false || !strings.HasPrefix(got[0]["error"].(string), "402:") || adv["reconnect"] != "handshake" {
		t.Fatalf("unknown client over ws: %v", got)
	}
}

func TestWebSocketAckDeliversOnlyInConnectReplies(t *testing.T) {
	tb, ws, id := ackedWebSocket(t, "/wsack")
	ws.send(msg{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket"})
	pub := tb.handshake(t, nil)
	tb.publish(t, pub, "/wsack", 1)
	got := ws.recvUntil(2*time.Second, func(m []msg) bool { return find(m, "/meta/connect") != nil })
	if len(got) != 2 || got[0]["channel"] != "/wsack" || got[1]["channel"] != "/meta/connect" {
		t.Fatalf("acked delivery must ride on the connect reply: %v", got)
	}
}

func TestWebSocketDropNextConnectClosesSocketAndKeepsMessages(t *testing.T) {
	tb, ws, id := ackedWebSocket(t, "/drop")
	if ok, err := tb.LocalSessionOp(id, OpDropNextConnect); !ok || err != nil {
		t.Fatalf("arm drop: %v %v", ok, err)
	}
	ws.send(msg{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket"})
	pub := tb.handshake(t, nil)
	tb.publish(t, pub, "/drop", "lost-once")
	if _, err := ws.recv(2 * time.Second); err == nil {
		t.Fatal("socket should have been closed without the reply")
	}
	// A new socket: the unacknowledged batch comes again.
	ws2 := tb.wsDial(t)
	ws2.send(msg{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket", "ext": msg{"ack": 0}})
	got := ws2.recvUntil(2*time.Second, func(m []msg) bool { return find(m, "/meta/connect") != nil })
	if find(got, "/drop") == nil || find(got, "/drop")["data"] != "lost-once" {
		t.Fatalf("redelivery after lost reply: %v", got)
	}
}

func TestWebSocketCloseLeavesQueueForNextConnect(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.Timeout = 5 * time.Second; c.MaxInterval = 5 * time.Second })
	ws := tb.wsDial(t)
	id := wsHandshake(t, ws, nil)
	ws.send(msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/gone"})
	ws.recvUntil(2*time.Second, func(m []msg) bool { return find(m, "/meta/subscribe") != nil })
	_ = ws.c.CloseNow()
	eventually(t, 2*time.Second, func() error {
		if n := tb.conns.webSocketCount(); n != 0 {
			return fmt.Errorf("%d sockets tracked", n)
		}
		return nil
	})
	pub := tb.handshake(t, nil)
	tb.publish(t, pub, "/gone", "kept")
	got, _ := split(tb.connect(t, id, nil))
	if len(got) != 1 || got[0]["data"] != "kept" {
		t.Fatalf("after socket close, long-poll got %v", got)
	}
}

// ackedWebSocket starts a broker with the ack extension and a websocket
// session subscribed to ch whose first (immediate) connect was answered.
func ackedWebSocket(t *testing.T, ch string) (*testBroker, *wsClient, string) {
	t.Helper()
	tb := newTestBroker(t, func(c *Config) {
		c.Timeout = 5 * time.Second
		c.Extensions = []Extension{testAck{}}
	})
	ws := tb.wsDial(t)
	id := wsHandshake(t, ws, msg{"ack": true})
	ws.send(msg{"channel": "/meta/subscribe", "clientId": id, "subscription": ch},
		msg{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket"})
	ws.recvUntil(2*time.Second, func(m []msg) bool { return find(m, "/meta/connect") != nil })
	return tb, ws, id
}

// testAck is a minimal ack extension (package ext imports broker, so the
// real one cannot be used here); it drives the same Session methods.
type testAck struct{}

func (testAck) Incoming(_ context.Context, s *Session, m *protocol.Message) *protocol.Error {
	if s != nil && m.Channel == "/meta/connect" && s.AckEnabled() {
		if raw := m.ExtField("ack"); raw != nil {
			var n int64
			fmt.Sscan(string(raw), &n)
			s.Acknowledge(n)
		}
	}
	return nil
}

func (testAck) Outgoing(_ context.Context, s *Session, m *protocol.Message, r *protocol.Reply) {
	if s == nil || !r.OK() {
		return
	}
	if m.Channel == "/meta/handshake" && string(m.ExtField("ack")) == "true" {
		s.EnableAck()
		r.SetExt("ack", true)
	}
	if m.Channel == "/meta/connect" && s.AckEnabled() {
		r.SetExt("ack", s.LastBatch())
	}
}

// TestWebSocketShutdownAnswersWhatItProcessed: a node shutting down closes
// a websocket with 1001 only once every frame it processed is answered,
// and processes no frame after: a client publishing as fast as it can
// while the node shuts down gets a reply for exactly the publishes that
// took effect, so the ones it got no reply for may be sent again without
// being repeated (pkg/client does).
func TestWebSocketShutdownAnswersWhatItProcessed(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.PublishRate, c.PublishBurst = 1e6, 1e6 })
	c, id := tb.wsSession(t)
	c.SetReadLimit(64 << 20) // replies to many publishes come in one frame
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { // publish until the socket dies
		for i := 0; ctx.Err() == nil; i++ {
			b, _ := json.Marshal([]msg{{"channel": "/flood", "clientId": id, "data": i, "id": fmt.Sprint("p", i)}})
			if c.Write(ctx, websocket.MessageText, b) != nil {
				return
			}
		}
	}()
	answered := 0
	readErr := make(chan error, 1)
	go func() {
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				readErr <- err
				return
			}
			var ms []msg
			_ = json.Unmarshal(b, &ms)
			for _, m := range ms {
				if m["channel"] == "/flood" && m["successful"] == true {
					answered++
				}
			}
		}
	}()
	// Let publishes flow, then shut down under them.
	eventually(t, 5*time.Second, func() error {
		if n := tb.Stats().Publishes; n < 200 {
			return fmt.Errorf("%d publishes", n)
		}
		return nil
	})
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = tb.Shutdown(sctx)
	scancel()
	err := <-readErr
	if websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("socket ended with %v, want 1001 going away", err)
	}
	if processed := tb.Stats().Publishes; int64(answered) != processed {
		t.Fatalf("%d publishes processed, %d answered before the close: the difference took effect unanswered", processed, answered)
	}
}
