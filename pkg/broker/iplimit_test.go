package broker

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
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
