package broker

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSessionsPerIP(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.MaxSessionsPerIP = 3 })
	var ids []string
	for range 3 {
		ids = append(ids, tb.handshake(t, nil))
	}
	hs := msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}}
	res := post(t, nil, tb.url, []msg{hs})
	r := res.Msgs[0]
	adv, _ := r["advice"].(map[string]any)
	if r["successful"] != false || !strings.HasPrefix(r["error"].(string), "429:3:") || adv["reconnect"] != "retry" || adv["interval"] != float64(10000) {
		t.Fatalf("4th handshake from one address: %v", r)
	}
	post(t, nil, tb.url, []msg{{"channel": "/meta/disconnect", "clientId": ids[0]}})
	tb.handshake(t, nil) // a slot is free again
}

func TestHeldConnectsPerIP(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.MaxHeldPerIP = 2; c.Timeout = 10 * time.Second })
	var ids []string
	for range 3 {
		ids = append(ids, tb.handshake(t, nil))
	}
	done := make(chan []msg, 2)
	for _, id := range ids[:2] {
		go func() { done <- tb.connect(t, id, nil) }()
	}
	eventually(t, 5*time.Second, func() error {
		if n := tb.lim.ipHeld.count("127.0.0.1"); n != 2 {
			return fmt.Errorf("%d held", n)
		}
		return nil
	})
	start := time.Now()
	r := tb.connect(t, ids[2], nil)[0]
	adv, _ := r["advice"].(map[string]any)
	if r["successful"] != false || !strings.HasPrefix(r["error"].(string), "429:2:") || adv["reconnect"] != "retry" || time.Since(start) > 2*time.Second {
		t.Fatalf("3rd held connect from one address: %v after %v", r, time.Since(start))
	}
	// Releasing one (a publish wakes nobody: disconnect ends it) frees a slot.
	post(t, nil, tb.url, []msg{{"channel": "/meta/disconnect", "clientId": ids[0]}})
	<-done
	eventually(t, 5*time.Second, func() error {
		if n := tb.lim.ipHeld.count("127.0.0.1"); n != 1 {
			return fmt.Errorf("%d held", n)
		}
		return nil
	})
	tb.subscribe(t, ids[2], "/held")
	go func() { done <- tb.connect(t, ids[2], nil) }()
	eventually(t, 5*time.Second, func() error {
		if !tb.hasHeld(ids[2]) {
			return fmt.Errorf("not held")
		}
		return nil
	})
	tb.publish(t, ids[1], "/held", 1)
	if d, _ := split(<-done); len(d) != 1 {
		t.Fatalf("held connect after a slot freed: %v", d)
	}
	// End the last held connect before the test's server goes away.
	post(t, nil, tb.url, []msg{{"channel": "/meta/disconnect", "clientId": ids[1]}})
	<-done
}

func (tb *testBroker) hasHeld(id string) bool {
	s, ok := tb.Session(id)
	return ok && s.hasWaiter()
}

func TestClientIP(t *testing.T) {
	b, err := New(Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		peer, xff, want string
	}{
		{"192.0.2.1:5000", "", "192.0.2.1"},
		{"192.0.2.1:5000", "198.51.100.7", "192.0.2.1"},                // untrusted peer: header ignored
		{"10.1.2.3:5000", "198.51.100.7", "198.51.100.7"},              // trusted balancer
		{"10.1.2.3:5000", "203.0.113.9, 198.51.100.7", "198.51.100.7"}, // right-most untrusted
		{"10.1.2.3:5000", "198.51.100.7, 10.9.9.9", "198.51.100.7"},    // skips trusted hops
		{"10.1.2.3:5000", "not-an-ip", "10.1.2.3"},                     // malformed: the peer
		{"10.1.2.3:5000", "", "10.1.2.3"},                              // no header
		{"[::1]:5000", "2001:db8::5", "2001:db8::5"},                   // IPv6
	} {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = tc.peer
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := b.clientIP(r); got != tc.want {
			t.Errorf("peer %s XFF %q: %s, want %s", tc.peer, tc.xff, got, tc.want)
		}
	}
}

// logBuffer is a goroutine-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPerIPLimitWarns: every refusal by a per-address limit is counted
// (Observer.LimitRefused, the metric bayeux_limit_refusals_total{limit}),
// and the first of each limit is logged at WARN with the address and a
// hint naming --trusted-proxies (behind a balancer every client has its
// address); the next ones within limitWarnEvery are not logged again.
func TestPerIPLimitWarns(t *testing.T) {
	obs := &countingObserver{}
	logs := &logBuffer{}
	tb := newTestBroker(t, func(c *Config) {
		c.MaxSessionsPerIP, c.MaxHeldPerIP, c.Timeout = 2, 1, 10*time.Second
		c.Observer = obs
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	ids := []string{tb.handshake(t, nil), tb.handshake(t, nil)}
	hs := msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}}
	for range 3 {
		if r := post(t, nil, tb.url, []msg{hs}).Msgs[0]; r["successful"] != false {
			t.Fatalf("handshake over the limit: %v", r)
		}
	}
	done := make(chan []msg, 1)
	go func() { done <- tb.connect(t, ids[0], nil) }()
	eventually(t, 5*time.Second, func() error {
		if !tb.hasHeld(ids[0]) {
			return fmt.Errorf("not held")
		}
		return nil
	})
	for range 2 {
		if r := tb.connect(t, ids[1], nil)[0]; r["successful"] != false {
			t.Fatalf("held connect over the limit: %v", r)
		}
	}
	post(t, nil, tb.url, []msg{{"channel": "/meta/disconnect", "clientId": ids[0]}})
	<-done

	tests := []struct {
		limit   string
		refused int
	}{
		{LimitSessionsPerIP, 3},
		{LimitHeldPerIP, 2},
	}
	out := logs.String()
	for _, tc := range tests {
		if n := obs.get("limit/" + tc.limit); n != tc.refused {
			t.Errorf("%s: %d refusals counted, want %d", tc.limit, n, tc.refused)
		}
		var warns []string
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "level=WARN") && strings.Contains(line, "limit="+tc.limit) {
				warns = append(warns, line)
			}
		}
		if len(warns) != 1 {
			t.Errorf("%s: %d WARN lines, want 1:\n%s", tc.limit, len(warns), strings.Join(warns, "\n"))
			continue
		}
		for _, want := range []string{"--trusted-proxies", "address=127.0.0.1"} {
			if !strings.Contains(warns[0], want) {
				t.Errorf("%s: WARN %q does not name %s", tc.limit, warns[0], want)
			}
		}
	}
}
