package broker

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

func TestHandshakeReplyFields(t *testing.T) {
	tb := newTestBroker(t, nil)
	res := post(t, nil, tb.url, []msg{{"channel": "/meta/handshake", "version": "1.0", "minimumVersion": "1.0",
		"supportedConnectionTypes": []string{"long-polling", "callback-polling"}, "id": "7"}})
	if res.Status != http.StatusOK || len(res.Msgs) != 1 {
		t.Fatalf("handshake: %d %s", res.Status, res.Body)
	}
	m := res.Msgs[0]
	for _, tt := range []struct {
		field string
		want  any
	}{
		{"channel", "/meta/handshake"}, {"successful", true}, {"version", "1.0"}, {"id", "7"},
	} {
		if m[tt.field] != tt.want {
			t.Errorf("%s = %v, want %v", tt.field, m[tt.field], tt.want)
		}
	}
	id, _ := m["clientId"].(string)
	if len(id) < 26 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz234567") != "" {
		t.Errorf("clientId %q: want >= 26 base32 chars", id)
	}
	types, _ := m["supportedConnectionTypes"].([]any)
	if len(types) != 3 {
		t.Errorf("supportedConnectionTypes = %v", types)
	}
	adv, _ := m["advice"].(map[string]any)
	if adv["reconnect"] != "retry" || adv["timeout"] != float64(2000) || adv["interval"] != float64(0) || adv["maxInterval"] != float64(2000) {
		t.Errorf("advice = %v", adv)
	}
	if c := res.Header.Get("Set-Cookie"); !strings.Contains(c, "BAYEUX_BROWSER=") || !strings.Contains(c, "HttpOnly") {
		t.Errorf("Set-Cookie = %q", c)
	}
}

func TestClientIDsAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 10000 {
		id := newSessionID("")
		if seen[id] || len(id) != 26 {
			t.Fatalf("id %q repeated or wrong length", id)
		}
		seen[id] = true
	}
}

func TestPublishSubscribeAndBatching(t *testing.T) {
	tb := newTestBroker(t, nil)
	sub := tb.handshake(t, nil)
	pub := tb.handshake(t, nil)
	// One request: subscribe, then a publish by the same client to the same
	// channel; replies come in message order.
	res := post(t, nil, tb.url, []msg{
		{"channel": "/meta/subscribe", "clientId": sub, "subscription": "/chat/room", "id": "1"},
		{"channel": "/chat/room", "clientId": sub, "data": "self", "id": "2"},
	})
	if len(res.Msgs) != 2 || res.Msgs[0]["id"] != "1" || res.Msgs[1]["id"] != "2" ||
		res.Msgs[0]["subscription"] != "/chat/room" || res.Msgs[1]["successful"] != true {
		t.Fatalf("batched replies: %s", res.Body)
	}
	tb.publish(t, pub, "/chat/room", map[string]any{"n": 1})
	got, _ := split(tb.connect(t, sub, nil))
	if len(got) != 2 || got[0]["data"] != "self" || got[1]["data"].(map[string]any)["n"] != float64(1) {
		t.Fatalf("deliveries = %v", got)
	}
	for _, d := range got {
		if _, leaked := d["clientId"]; leaked {
			t.Fatalf("delivery leaks clientId: %v", d)
		}
	}
}

func TestWildcardsAndNoDuplicates(t *testing.T) {
	tb := newTestBroker(t, nil)
	pub := tb.handshake(t, nil)
	tests := []struct {
		patterns []string
		want     []string // channels received, in order
	}{
		{[]string{"/w/*"}, []string{"/w/a"}},
		{[]string{"/w/**"}, []string{"/w/a", "/w/a/b"}},
		{[]string{"/w/a", "/w/*", "/w/**", "/**"}, []string{"/w/a", "/w/a/b", "/wx"}},
		{[]string{"/*"}, []string{"/wx"}},
	}
	subs := make([]string, len(tests))
	for i, tt := range tests {
		subs[i] = tb.handshake(t, nil)
		tb.subscribe(t, subs[i], tt.patterns...)
	}
	for _, ch := range []string{"/w/a", "/w/a/b", "/wx", "/w"} {
		_ = ch
	}
	tb.publish(t, pub, "/w/a", 1)
	tb.publish(t, pub, "/w/a/b", 2)
	tb.publish(t, pub, "/wx", 3)
	for i, tt := range tests {
		got, _ := split(tb.connect(t, subs[i], nil))
		var chans []string
		for _, d := range got {
			chans = append(chans, d["channel"].(string))
		}
		if fmt.Sprint(chans) != fmt.Sprint(tt.want) {
			t.Errorf("patterns %v received %v, want %v", tt.patterns, chans, tt.want)
		}
	}
}

func TestHeldConnectReturnsOnDeliveryAndPublishDoesNotWait(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.Timeout = 10 * time.Second })
	sub := tb.handshake(t, nil)
	tb.subscribe(t, sub, "/held")
	got := make(chan []msg, 1)
	go func() { got <- tb.connect(t, sub, nil) }()
	tb.waitHeld(t, sub)
	// The same client publishes while its connect is held.
	start := time.Now()
	tb.publish(t, sub, "/held", "x")
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("publish waited %v behind the held connect", d)
	}
	select {
	case msgs := <-got:
		d, r := split(msgs)
		if len(d) != 1 || d[0]["data"] != "x" || len(r) != 1 || r[0]["channel"] != "/meta/connect" {
			t.Fatalf("connect reply = %v", msgs)
		}
		if msgs[len(msgs)-1]["channel"] != "/meta/connect" {
			t.Fatalf("connect reply must follow deliveries: %v", msgs)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held connect did not return on delivery")
	}
}

func TestNewConnectReleasesHeldOne(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.Timeout = 10 * time.Second })
	id := tb.handshake(t, nil)
	first := make(chan []msg, 1)
	go func() { first <- tb.connect(t, id, nil) }()
	tb.waitHeld(t, id)
	second := make(chan []msg, 1)
	go func() { second <- tb.connect(t, id, msg{}) }()
	select {
	case m := <-first:
		if len(m) != 1 || m[0]["successful"] != true {
			t.Fatalf("released connect = %v", m)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("first connect not released by the second")
	}
	tb.ExpireSession(id)
	<-second
}

func TestClientProposedTimeoutIsHonouredWithinBounds(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.Timeout = 5 * time.Second; c.MaxTimeout = 6 * time.Second })
	id := tb.handshake(t, nil)
	// A proposal of 0 (or less) is answered at once, and advised the
	// configured timeout for the connects to come, not 0: Faye proposes 0
	// whenever it batches its connect with other messages, and then gave
	// up on its next connect after 6 s (1.2 × its retry of 5 s) instead
	// of 1.2 × the timeout, closing its websocket with deliveries on
	// their way.
	tests := []struct {
		proposed int64
		want     float64
		held     time.Duration // about
	}{{100, 100, 100 * time.Millisecond}, {60000, 6000, 6 * time.Second}, {0, 5000, 0}, {-5, 5000, 0}}
	for _, tt := range tests {
		start := time.Now()
		res := post(t, nil, tb.url, []msg{{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling",
			"advice": msg{"timeout": tt.proposed}}})
		held := time.Since(start)
		adv := res.Msgs[0]["advice"].(map[string]any)
		if adv["timeout"] != tt.want {
			t.Errorf("proposed %d: advised timeout %v, want %v", tt.proposed, adv["timeout"], tt.want)
		}
		if held < tt.held*9/10 || held > tt.held+time.Second {
			t.Errorf("proposed %d: connect held %v, want about %v", tt.proposed, held, tt.held)
		}
	}
}

func TestUnsubscribeStopsDelivery(t *testing.T) {
	tb := newTestBroker(t, nil)
	id := tb.handshake(t, nil)
	tb.subscribe(t, id, "/u/a", "/u/control")
	res := post(t, nil, tb.url, []msg{{"channel": "/meta/unsubscribe", "clientId": id, "subscription": "/u/a"}})
	if res.Msgs[0]["successful"] != true || res.Msgs[0]["subscription"] != "/u/a" {
		t.Fatalf("unsubscribe: %s", res.Body)
	}
	tb.publish(t, id, "/u/a", "gone")
	tb.publish(t, id, "/u/control", "here")
	got, _ := split(tb.connect(t, id, nil))
	if len(got) != 1 || got[0]["channel"] != "/u/control" {
		t.Fatalf("deliveries after unsubscribe: %v", got)
	}
	if n := tb.Stats().Patterns; n != 1 {
		t.Fatalf("engine patterns in use = %d, want 1", n)
	}
}

func TestUnknownClientAndDisconnect(t *testing.T) {
	tb := newTestBroker(t, nil)
	id := tb.handshake(t, nil)
	res := post(t, nil, tb.url, []msg{{"channel": "/meta/disconnect", "clientId": id, "id": "d"}})
	if res.Msgs[0]["successful"] != true || res.Msgs[0]["id"] != "d" {
		t.Fatalf("disconnect: %s", res.Body)
	}
	for _, ch := range []string{"/meta/connect", "/meta/subscribe", "/foo"} {
		res := post(t, nil, tb.url, []msg{{"channel": ch, "clientId": id, "connectionType": "long-polling", "subscription": "/x", "data": 1}})
		m := res.Msgs[0]
		adv, _ := m["advice"].(map[string]any)
		if m["successful"] != false || !strings.HasPrefix(m["error"].(string), "402:"+id+":") || adv["reconnect"] != "handshake" {
			t.Errorf("%s with old id: %v", ch, m)
		}
	}
}

func TestSessionExpiresWithoutConnect(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.MaxInterval = 200 * time.Millisecond })
	id := tb.handshake(t, nil)
	eventually(t, 3*time.Second, func() error {
		if _, ok := tb.Session(id); ok {
			return fmt.Errorf("session %s still alive", id)
		}
		return nil
	})
	m := tb.connect(t, id, nil)[0]
	if !strings.HasPrefix(m["error"].(string), "402:") {
		t.Fatalf("connect after expiry: %v", m)
	}
}

func TestExpireAnswersHeldConnectWith402(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.Timeout = 10 * time.Second })
	id := tb.handshake(t, nil)
	got := make(chan []msg, 1)
	go func() { got <- tb.connect(t, id, nil) }()
	tb.waitHeld(t, id)
	res := post(t, nil, strings.Replace(tb.url, "/cometd", "/debug/bayeux/sessions/"+id+"/expire", 1), "")
	if res.Status != http.StatusNoContent {
		t.Fatalf("expire: %d", res.Status)
	}
	m := (<-got)[0]
	adv, _ := m["advice"].(map[string]any)
	if m["successful"] != false || !strings.HasPrefix(m["error"].(string), "402:") || adv["reconnect"] != "handshake" {
		t.Fatalf("held connect after expire: %v", m)
	}
}

func TestQueueOverflowTerminatesAndTells(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.MaxQueueMessages = 5 })
	slow := tb.handshake(t, nil)
	fast := tb.handshake(t, nil)
	tb.subscribe(t, slow, "/q")
	tb.subscribe(t, fast, "/q")
	for i := range 6 {
		tb.publish(t, fast, "/q", i)
		got, _ := split(tb.connect(t, fast, nil))
		if len(got) != 1 {
			t.Fatalf("fast subscriber got %v", got)
		}
	}
	m := tb.connect(t, slow, nil)
	if len(m) != 1 || m[0]["successful"] != false || !strings.HasPrefix(m[0]["error"].(string), "409:") {
		t.Fatalf("slow subscriber connect = %v", m)
	}
	if adv := m[0]["advice"].(map[string]any); adv["reconnect"] != "handshake" {
		t.Fatalf("overflow advice = %v", adv)
	}
	if tb.Stats().QueueOverflows != 1 {
		t.Fatalf("overflows = %d", tb.Stats().QueueOverflows)
	}
}

func TestServiceChannelsAreNeverBroadcast(t *testing.T) {
	tb := newTestBroker(t, nil)
	caller := tb.handshake(t, nil)
	spy := tb.handshake(t, nil)
	tb.subscribe(t, spy, "/**")
	tb.subscribe(t, caller, "/service/echo")
	res := post(t, nil, tb.url, []msg{{"channel": "/service/echo", "clientId": caller, "data": "ping", "id": "s"}})
	if res.Msgs[0]["successful"] != true || res.Msgs[0]["id"] != "s" {
		t.Fatalf("service publish: %s", res.Body)
	}
	tb.publish(t, caller, "/control", "c")
	got, _ := split(tb.connect(t, caller, nil))
	if len(got) != 1 || got[0]["channel"] != "/service/echo" || got[0]["data"] != "ping" {
		t.Fatalf("caller got %v", got)
	}
	spied, _ := split(tb.connect(t, spy, nil))
	if len(spied) != 1 || spied[0]["channel"] != "/control" {
		t.Fatalf("spy on /** got %v", spied)
	}
}

func TestMultipleClientsInOneBrowser(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.Timeout = 10 * time.Second })
	jar := newJar()
	client := &http.Client{Jar: jar}
	hs := func() string {
		res := post(t, client, tb.url, []msg{{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}}})
		id := res.Msgs[0]["clientId"].(string)
		post(t, client, tb.url, []msg{{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"}})
		return id
	}
	a, b := hs(), hs()
	held := make(chan []msg, 1)
	go func() {
		held <- post(t, client, tb.url, []msg{{"channel": "/meta/connect", "clientId": a, "connectionType": "long-polling"}}).Msgs
	}()
	tb.waitHeld(t, a)
	start := time.Now()
	m := post(t, client, tb.url, []msg{{"channel": "/meta/connect", "clientId": b, "connectionType": "long-polling"}}).Msgs[0]
	adv := m["advice"].(map[string]any)
	if adv["multiple-clients"] != true || adv["interval"] != float64(2000) || time.Since(start) > time.Second {
		t.Fatalf("second session's connect: %v after %v", m, time.Since(start))
	}
	tb.ExpireSession(a)
	<-held
}

func TestShutdownAnswersHeldConnectsWithRetry(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.Timeout = 10 * time.Second })
	id := tb.handshake(t, nil)
	got := make(chan []msg, 1)
	go func() { got <- tb.connect(t, id, nil) }()
	tb.waitHeld(t, id)
	ctx, cancel := contextWithTimeout(2 * time.Second)
	defer cancel()
	_ = tb.Shutdown(ctx)
	m := (<-got)[0]
	adv := m["advice"].(map[string]any)
	if m["successful"] != true || adv["reconnect"] != "retry" {
		t.Fatalf("held connect at shutdown: %v", m)
	}
	res := post(t, nil, tb.url, []msg{{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}}})
	if res.Msgs[0]["successful"] != false || !strings.HasPrefix(res.Msgs[0]["error"].(string), "503:") {
		t.Fatalf("handshake while shutting down: %s", res.Body)
	}
}

func TestOrderUnderConcurrentPublishers(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.MaxQueueMessages = 100000 })
	subs := []string{tb.handshake(t, nil), tb.handshake(t, nil)}
	for _, s := range subs {
		tb.subscribe(t, s, "/order")
	}
	const publishers, each = 4, 50
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := tb.handshake(t, nil)
			for i := range each {
				tb.publish(t, id, "/order", map[string]any{"p": p, "i": i})
			}
		}()
	}
	wg.Wait()
	var seqs [2][]string
	for k, s := range subs {
		for len(seqs[k]) < publishers*each {
			got, _ := split(tb.connect(t, s, nil))
			last := map[float64]float64{}
			for _, d := range got {
				m := d["data"].(map[string]any)
				seqs[k] = append(seqs[k], fmt.Sprint(m["p"], ":", m["i"]))
				_ = last
			}
		}
	}
	if fmt.Sprint(seqs[0]) != fmt.Sprint(seqs[1]) {
		t.Fatal("two subscribers saw different orders")
	}
	next := map[string]int{}
	for _, e := range seqs[0] {
		var p, i int
		fmt.Sscanf(e, "%d:%d", &p, &i)
		key := fmt.Sprint(p)
		if i != next[key] {
			t.Fatalf("publisher %d: got %d, want %d", p, i, next[key])
		}
		next[key]++
	}
}

// denyPolicy denies subscribing to /secret/** and publishing to /ro/**,
// and handshakes carrying ext.deny.
type denyPolicy struct{}

func (denyPolicy) CanHandshake(_ context.Context, _ RequestInfo, m *protocol.Message) *protocol.Error {
	if m.ExtField("deny") != nil {
		return protocol.NewError(protocol.CodeDenied, "Handshake denied")
	}
	return nil
}

func (denyPolicy) CanSubscribe(_ context.Context, s *Session, ch string, _ *protocol.Message) *protocol.Error {
	if strings.HasPrefix(ch, "/secret/") {
		return protocol.NewError(protocol.CodeDenied, "Subscription denied", s.ID(), ch)
	}
	return nil
}

func (denyPolicy) CanPublish(_ context.Context, s *Session, ch string, _ *protocol.Message) *protocol.Error {
	if strings.HasPrefix(ch, "/ro/") {
		return protocol.NewError(protocol.CodeDenied, "Publish denied", s.ID(), ch)
	}
	return nil
}

func TestPolicyHooks(t *testing.T) {
	tb := newTestBroker(t, func(c *Config) { c.Policy = denyPolicy{} })
	res := post(t, nil, tb.url, []msg{{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}, "ext": msg{"deny": true}}})
	m := res.Msgs[0]
	adv, _ := m["advice"].(map[string]any)
	if m["successful"] != false || !strings.HasPrefix(m["error"].(string), "403:") || adv["reconnect"] != "none" {
		t.Fatalf("denied handshake: %v", m)
	}
	id := tb.handshake(t, nil)
	tests := []struct {
		m    msg
		want string // error prefix; "" = success
	}{
		{msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/secret/x"}, "403:"},
		{msg{"channel": "/meta/subscribe", "clientId": id, "subscription": []string{"/open", "/secret/y"}}, "403:"},
		{msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/open"}, ""},
		{msg{"channel": "/ro/news", "clientId": id, "data": 1}, "403:"},
		{msg{"channel": "/open", "clientId": id, "data": 1}, ""},
	}
	for _, tt := range tests {
		r := post(t, nil, tb.url, []msg{tt.m}).Msgs[0]
		if tt.want == "" && r["successful"] != true || tt.want != "" && (r["successful"] != false || !strings.HasPrefix(fmt.Sprint(r["error"]), tt.want)) {
			t.Errorf("%v: reply %v, want %q", tt.m, r, tt.want)
		}
	}
	// The all-or-nothing subscribe left /open subscribed once, /secret never.
	s, _ := tb.Session(id)
	if subs := s.Subscriptions(); len(subs) != 1 || subs[0] != "/open" {
		t.Fatalf("subscriptions = %v", subs)
	}
}
