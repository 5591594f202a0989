package broker

import (
	"strings"
	"testing"
	"time"
)

// TestThrottlePacesFlooder: a request with publishes refused for their
// rate is answered only once the bucket has earned them back (long-polling),
// and a websocket is not read meanwhile; a client within its rate never
// waits.
func TestThrottlePacesFlooder(t *testing.T) {
	const rate, burst = 200.0, 10
	tb := newTestBroker(t, func(c *Config) { c.PublishRate, c.PublishBurst = rate, burst })
	batch := func(id string, n int) []msg {
		ms := make([]msg, n)
		for i := range ms {
			ms[i] = msg{"channel": "/paced", "clientId": id, "data": i}
		}
		return ms
	}
	count := func(replies []msg) (ok, refused int) {
		for _, r := range replies {
			if r["successful"] == true {
				ok++
			} else if e, _ := r["error"].(string); strings.HasPrefix(e, "429:/paced:") {
				refused++
			}
		}
		return ok, refused
	}

	// Within the rate: no wait.
	calm := tb.handshake(t, nil)
	start := time.Now()
	if ok, _ := count(post(t, nil, tb.url, batch(calm, burst)).Msgs); ok != burst {
		t.Fatalf("%d of %d publishes within the burst accepted", ok, burst)
	}
	calmTime := time.Since(start)

	// Long-polling: 40 refused, the answer waits 40/200 s.
	lp := tb.handshake(t, nil)
	start = time.Now()
	ok, refused := count(post(t, nil, tb.url, batch(lp, 50)).Msgs)
	lpTime := time.Since(start)
	// The bucket refills while the 50 publishes are processed (lpTime less
	// the pacing wait): on a loaded machine that is a few more tokens.
	processing := max(0, lpTime.Seconds()-float64(refused)/rate)
	if maxOK := burst + int(rate*processing) + 2; ok < burst || ok > maxOK || refused != 50-ok {
		t.Fatalf("long-polling: %d accepted (want %d to %d), %d refused in %v", ok, burst, maxOK, refused, lpTime)
	}
	if want := time.Duration(float64(refused) / rate * float64(time.Second)); lpTime < want*3/4 {
		t.Fatalf("long-polling: %d refused answered after %v, want about %v", refused, lpTime, want)
	}

	// Websocket: after a frame with 40 refused, the next frame is read
	// 40/200 s later.
	w := tb.wsDial(t)
	w.send(msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"websocket"}})
	id, _ := find(w.recvUntil(5*time.Second, func(ms []msg) bool { return find(ms, "/meta/handshake") != nil }), "/meta/handshake")["clientId"].(string)
	w.send(batch(id, 50)...)
	start = time.Now()
	w.send(msg{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket", "id": "after"})
	var wsOK, wsRefused int
	w.recvUntil(5*time.Second, func(ms []msg) bool {
		wsOK, wsRefused = count(ms)
		for _, m := range ms {
			if m["id"] == "after" {
				return true
			}
		}
		return false
	})
	wsTime := time.Since(start)
	if want := time.Duration(float64(wsRefused) / rate * float64(time.Second)); wsRefused < 30 || wsTime < want*3/4 {
		t.Fatalf("websocket: %d accepted, %d refused; next frame answered after %v, want about %v", wsOK, wsRefused, wsTime, want)
	}
	t.Logf("answered within the rate in %v; long-polling with %d refused in %v; next websocket frame after %d refused in %v",
		calmTime, refused, lpTime, wsRefused, wsTime)
	if calmTime > 100*time.Millisecond && calmTime > lpTime/2 {
		t.Errorf("a client within its rate waited %v", calmTime)
	}
}

func TestThrottleDelay(t *testing.T) {
	b := &Broker{cfg: Config{PublishRate: 2000}}
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{0, 0}, {1, 500 * time.Microsecond}, {100, 50 * time.Millisecond}, {1 << 20, maxThrottle}} {
		if got := b.throttleDelay(tc.n); got != tc.want {
			t.Errorf("throttleDelay(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
	b.cfg.PublishRate = -1 // unlimited
	if got := b.throttleDelay(10); got != 0 {
		t.Errorf("unlimited: throttleDelay = %v", got)
	}
}
