package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
)

// TestReplaySalesforceStyle: the way jsforce and EMP-Connector use replay.
// The handshake carries nothing; ext.replay comes in the /meta/subscribe
// only; each event is read back from data.event.replayId; a bad id gets
// Salesforce's exact wording.
func TestReplaySalesforceStyle(t *testing.T) {
	n := startXNode(t, nil, nil)
	p := n.peer
	pub := openX(t, p, nil)
	events := func(ch string) {
		for i := 1; i <= 5; i++ {
			// Salesforce's event shape: schema, payload, event.
			p.MustSucceed(Msg{"channel": ch, "clientId": pub, "data": Msg{"schema": "s1", "payload": Msg{"n": i}, "event": Msg{"EventUuid": fmt.Sprint("u", i)}}})
		}
		// A publication whose data is not an object keeps it, with ext.replay.
		p.MustSucceed(Msg{"channel": ch, "clientId": pub, "data": "plain"})
	}

	type event struct {
		n, replayID int
		uuid        string
	}
	read := func(t *testing.T, ms []Msg) []event {
		t.Helper()
		var out []event
		for _, m := range ms {
			ext, _ := m["ext"].(map[string]any)
			extID, ok := ext["replay"].(float64)
			if !ok {
				t.Fatalf("delivery without ext.replay: %v", m)
			}
			data, isObj := m["data"].(map[string]any)
			if !isObj {
				if m["data"] != "plain" {
					t.Fatalf("non-object data changed: %v", m)
				}
				out = append(out, event{n: 0, replayID: int(extID)})
				continue
			}
			ev, _ := data["event"].(map[string]any)
			id, _ := ev["replayId"].(float64)
			if id != extID {
				t.Fatalf("data.event.replayId %v != ext.replay %v in %v", ev["replayId"], extID, m)
			}
			pl, _ := data["payload"].(map[string]any)
			nv, _ := pl["n"].(float64)
			uuid, _ := ev["EventUuid"].(string)
			if data["schema"] != "s1" || uuid != fmt.Sprint("u", int(nv)) {
				t.Fatalf("other fields not kept: %v", m)
			}
			out = append(out, event{n: int(nv), replayID: int(id), uuid: uuid})
		}
		return out
	}
	cases := []struct {
		name  string
		from  int64
		wantN []int // data.payload.n of the replayed events (0: the plain one)
	}{
		{"all retained (-2)", -2, []int{1, 2, 3, 4, 5, 0}},
		{"after replay id 3", 3, []int{4, 5, 0}},
		{"new only (-1)", -1, nil},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := fmt.Sprintf("/event/Order%d__e", i)
			events(ch)
			id := openX(t, p, nil) // no ext.replay in the handshake, as jsforce does
			r := subscribeX(t, p, id, ch, map[string]int64{ch: tc.from})
			if r["successful"] != true {
				t.Fatalf("subscribe: %v", r)
			}
			d, _ := pollX(t, p, id, nil)
			evs := read(t, d)
			if len(evs) != len(tc.wantN) {
				t.Fatalf("replayed %v, want payload.n %v", evs, tc.wantN)
			}
			for i, e := range evs {
				if e.n != tc.wantN[i] {
					t.Fatalf("replayed %v, want payload.n %v", evs, tc.wantN)
				}
			}
			// A live event reaches the session with its id, and the id the
			// client read back resumes after it.
			p.MustSucceed(Msg{"channel": ch, "clientId": pub, "data": Msg{"schema": "s1", "payload": Msg{"n": 9}, "event": Msg{"EventUuid": "u9"}}})
			d, _ = pollX(t, p, id, nil)
			live := read(t, d)
			if len(live) != 1 || live[0].n != 9 || live[0].replayID <= 0 {
				t.Fatalf("live event %v", live)
			}
		})
	}
	t.Run("invalid id refused with Salesforce's wording", func(t *testing.T) {
		const ch = "/event/Invalid__e"
		events(ch)
		for _, bad := range []int64{99999, -3} {
			id := openX(t, p, nil)
			r := subscribeX(t, p, id, ch, map[string]int64{ch: bad})
			want := fmt.Sprintf("400::The replayId {%d} you provided was invalid. Please provide a valid ID, -2 to replay all events, or -1 to replay only new events.", bad)
			if r["successful"] != false || r["error"] != want {
				t.Fatalf("subscribe from %d: %v\nwant error %q", bad, r, want)
			}
		}
	})
}

// TestReplayOnlyWebSocketDeliversAtOnce: a replay session without the ack
// extension, on a websocket, holds its connect; a publication answers that
// connect at once instead of waiting for its timeout.
func TestReplayOnlyWebSocketDeliversAtOnce(t *testing.T) {
	n := startXNode(t, func(c *broker.Config) { c.Timeout = 20 * time.Second }, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(n.peer.URL, "http")+"/cometd", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	send := func(m Msg) {
		b, _ := json.Marshal([]Msg{m})
		if err := c.Write(ctx, websocket.MessageText, b); err != nil {
			t.Fatal(err)
		}
	}
	recvUntil := func(pred func(Msg) bool) Msg {
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			var ms []Msg
			if err := json.Unmarshal(b, &ms); err != nil {
				t.Fatalf("frame %s: %v", b, err)
			}
			for _, m := range ms {
				if pred(m) {
					return m
				}
			}
		}
	}
	const ch = "/event/Ws__e"
	send(Msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"websocket"}, "id": "1"})
	id := recvUntil(func(m Msg) bool { return m["channel"] == "/meta/handshake" })["clientId"].(string)
	send(Msg{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket", "id": "2"})
	recvUntil(func(m Msg) bool { return m["channel"] == "/meta/connect" })
	send(Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": ch, "id": "3", "ext": Msg{"replay": Msg{ch: -1}}})
	if r := recvUntil(func(m Msg) bool { return m["channel"] == "/meta/subscribe" }); r["successful"] != true {
		t.Fatalf("subscribe: %v", r)
	}
	send(Msg{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket", "id": "4"})
	bayeuxtest.Eventually(t, 5*time.Second, func() error { // the connect is held
		rec := httptest.NewRecorder()
		n.b.DebugHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/sessions/"+id, nil))
		if !strings.Contains(rec.Body.String(), `"held":true`) {
			return fmt.Errorf("connect not held yet: %s", rec.Body.String())
		}
		return nil
	})
	pub := openX(t, n.peer, nil)
	start := time.Now()
	n.peer.MustSucceed(Msg{"channel": ch, "clientId": pub, "data": Msg{"payload": Msg{"n": 1}}})
	m := recvUntil(func(m Msg) bool { return m["channel"] == ch })
	took := time.Since(start)
	if took > 5*time.Second {
		t.Fatalf("delivered after %v (the held connect's timeout is 20 s)", took)
	}
	t.Logf("delivered %v after the publish (the held connect's timeout is 20 s)", took.Round(time.Millisecond))
	if ev, _ := m["data"].(map[string]any)["event"].(map[string]any); ev["replayId"] == nil {
		t.Fatalf("delivery without data.event.replayId: %v", m)
	}
}

// TestReplayConnectIDs: a replay session without the ack extension
// acknowledges a batch with its next /meta/connect. A client of Faye's
// family (jsforce; no minimumVersion in its handshake) resends a connect
// whose reply it lost with the same message id: that connect gets the
// batch again, and a connect with a new id acknowledges it. A CometD-style
// client (minimumVersion) never resends an id: every connect acknowledges.
func TestReplayConnectIDs(t *testing.T) {
	const ch = "/ids/x"
	tests := []struct {
		name   string
		cometd bool
		second string // message id of the connect after the one that carried [1 2]
		want   []int  // delivered by that connect
	}{
		{"Faye: a new id acknowledges", false, `"b"`, nil},
		{"Faye: the same id gets the batch again", false, `"a"`, []int{1, 2}},
		{"Faye: no id acknowledges", false, "", nil},
		{"CometD: the same id acknowledges", true, `"a"`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := startXNode(t, nil, nil)
			p := n.peer
			pub := openX(t, p, nil)
			var id string
			if tt.cometd {
				id = openCometDStyle(t, p, Msg{"replay": true})
			} else {
				id = openX(t, p, Msg{"replay": true})
			}
			if r := subscribeX(t, p, id, ch, nil); r["successful"] != true {
				t.Fatalf("subscribe: %v", r)
			}
			publishX(t, p, pub, ch, 1, 2)
			if d, _ := pollXID(t, p, id, nil, `"a"`); !slices.Equal(ns(deliveriesOf(t, d)), []int{1, 2}) {
				t.Fatalf("first batch: %v", deliveriesOf(t, d))
			}
			d, r := pollXID(t, p, id, nil, tt.second)
			if r["successful"] != true {
				t.Fatalf("second connect: %v", r)
			}
			if got := ns(deliveriesOf(t, d)); !slices.Equal(got, tt.want) {
				t.Fatalf("second connect delivered %v, want %v", got, tt.want)
			}
			// A new id acknowledges whatever came before: only new events.
			publishX(t, p, pub, ch, 3)
			if d, _ := pollXID(t, p, id, nil, `"c"`); !slices.Equal(ns(deliveriesOf(t, d)), []int{3}) {
				t.Fatalf("after a new id: %v, want [3]", deliveriesOf(t, d))
			}
		})
	}
}
