package broker

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingObserver records Observer events.
type countingObserver struct {
	mu     sync.Mutex
	counts map[string]int
}

func (o *countingObserver) add(k string, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.counts == nil {
		o.counts = map[string]int{}
	}
	o.counts[k] += n
}

func (o *countingObserver) get(k string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts[k]
}

func (o *countingObserver) SessionOpened(tr string) { o.add("sessions/"+tr, 1) }
func (o *countingObserver) SessionClosed(tr string) { o.add("sessions/"+tr, -1) }
func (o *countingObserver) Handshake(ok bool)       { o.add(fmt.Sprint("handshake/", ok), 1) }
func (o *countingObserver) Connect()                { o.add("connect", 1) }
func (o *countingObserver) Subscribe()              { o.add("subscribe", 1) }
func (o *countingObserver) Publish(ok bool)         { o.add(fmt.Sprint("publish/", ok), 1) }
func (o *countingObserver) Deliveries(n int)        { o.add("deliveries", n) }
func (o *countingObserver) Error(code int)          { o.add(fmt.Sprint("error/", code), 1) }
func (o *countingObserver) QueueOverflow()          { o.add("overflow", 1) }
func (o *countingObserver) HeldConnect(d int)       { o.add("held", d) }
func (o *countingObserver) Gap()                    { o.add("gap", 1) }
func (o *countingObserver) SessionAdopted()         { o.add("adopted", 1) }
func (o *countingObserver) DeliveryLatency(float64) { o.add("latency", 1) }
func (o *countingObserver) LimitRefused(l string)   { o.add("limit/"+l, 1) }

func (o *countingObserver) want(t *testing.T, k string, v int) {
	t.Helper()
	eventually(t, 2*time.Second, func() error {
		if got := o.get(k); got != v {
			return fmt.Errorf("%s = %d, want %d", k, got, v)
		}
		return nil
	})
}

// TestObserverEvents: the observer sees balanced session and held-connect
// events, publishes, deliveries, errors and overflows.
func TestObserverEvents(t *testing.T) {
	obs := &countingObserver{}
	tb := newTestBroker(t, func(c *Config) { c.Observer = obs; c.MaxQueueMessages = 3 })

	a := tb.handshake(t, nil)
	b := tb.handshake(t, nil)
	obs.want(t, "sessions/long-polling", 2)
	obs.want(t, "handshake/true", 2)
	tb.subscribe(t, a, "/obs/*")
	tb.subscribe(t, b, "/obs/x")
	obs.want(t, "subscribe", 2)

	// A held connect counts while held and is released by a delivery.
	done := make(chan []msg, 1)
	go func() { done <- tb.connect(t, a, nil) }()
	tb.waitHeld(t, a)
	obs.want(t, "held", 1)
	tb.publish(t, b, "/obs/x", "hi")
	if d, _ := split(<-done); len(d) != 1 {
		t.Fatalf("held connect got %d deliveries", len(d))
	}
	obs.want(t, "held", 0)
	obs.want(t, "publish/true", 1)
	obs.want(t, "deliveries", 2) // a and b

	// b never connects: its queue overflows on the fourth message, and the
	// session is reaped.
	for i := 0; i < 3; i++ {
		tb.publish(t, a, "/obs/x", i)
	}
	obs.want(t, "overflow", 1)
	obs.want(t, "sessions/long-polling", 1)
	r := tb.connect(t, b, nil)
	if len(r) != 1 || r[0]["successful"] != false || !strings.HasPrefix(fmt.Sprint(r[0]["error"]), "409:") {
		t.Fatalf("connect after overflow: %v", r)
	}
	obs.want(t, "error/409", 1) // the reaped session still tells why it ended

	// A websocket session: the held connect is released when the socket
	// goes away, and a disconnect closes the session.
	w := tb.wsDial(t)
	w.send(msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"websocket"}})
	hs := w.recvUntil(2*time.Second, func(m []msg) bool { return len(m) > 0 })
	id, _ := hs[0]["clientId"].(string)
	obs.want(t, "sessions/websocket", 1)
	w.send(msg{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket"})
	w.recvUntil(2*time.Second, func(m []msg) bool { return len(m) > 0 }) // first connect: at once
	w.send(msg{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket"})
	obs.want(t, "held", 1)
	_ = w.c.CloseNow()
	obs.want(t, "held", 0)
	res := post(t, nil, tb.url, []msg{{"channel": "/meta/disconnect", "clientId": id}})
	if len(res.Msgs) != 1 || res.Msgs[0]["successful"] != true {
		t.Fatalf("disconnect: %s", res.Body)
	}
	obs.want(t, "sessions/websocket", 0)

	// A failed handshake.
	res = post(t, nil, tb.url, []msg{{"channel": "/meta/handshake", "supportedConnectionTypes": []string{"long-polling"}}})
	if len(res.Msgs) != 1 || res.Msgs[0]["successful"] != false {
		t.Fatalf("handshake without version: %s", res.Body)
	}
	obs.want(t, "handshake/false", 1)
	obs.want(t, "error/400", 1)
}
