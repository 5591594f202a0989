package broker

import (
	"net/http"
	"strings"
	"testing"
)

func TestPublishRateLimit(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.PublishRate = 0.001; c.PublishBurst = 5 })
	id := tb.handshake(t, nil)
	other := tb.handshake(t, nil)
	for i := range 5 {
		tb.publish(t, id, "/rate", i)
	}
	r := post(t, nil, tb.url, []msg{{"channel": "/rate", "clientId": id, "data": 5}}).Msgs[0]
	if r["successful"] != false || !strings.HasPrefix(r["error"].(string), "429:/rate:") {
		t.Fatalf("publish over the rate: %v", r)
	}
	// The bucket is per session: another client is not affected.
	tb.publish(t, other, "/rate", "other")
}

func TestSessionsPerBrowserLimit(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.MaxSessionsPerBrowser = 2 })
	client := &http.Client{Jar: newJar()}
	hs := func() msg {
		return post(t, client, tb.url, []msg{{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}}}).Msgs[0]
	}
	hs() // no cookie yet: this one sets it and is not counted
	a, b := hs(), hs()
	if a["successful"] != true || b["successful"] != true {
		t.Fatalf("handshakes within the limit: %v %v", a, b)
	}
	c := hs()
	adv, _ := c["advice"].(map[string]any)
	if c["successful"] != false || !strings.HasPrefix(c["error"].(string), "429:2:") || adv["reconnect"] != "retry" || adv["interval"] != float64(10000) {
		t.Fatalf("handshake over the limit: %v", c)
	}
	// Another browser is not affected.
	if r := post(t, nil, tb.url, []msg{{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}}}).Msgs[0]; r["successful"] != true {
		t.Fatalf("other browser: %v", r)
	}
	// Ending a session frees a place.
	post(t, client, tb.url, []msg{{"channel": "/meta/disconnect", "clientId": a["clientId"]}})
	if d := hs(); d["successful"] != true {
		t.Fatalf("after a disconnect: %v", d)
	}
}
