package broker_test

// Adoption cases; the two-broker harness (shared engine history, session
// store, router) is in adopt_harness_test.go.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

// adoptCase is one case of TestAdoptAfterOwnerDies.
type adoptCase struct {
	name      string
	handshake Msg
	batchesA  [][]int // delivered by A, batch by batch, each acknowledged by the next connect
	dead      []int   // published while A is dead
	ackOnB    int     // ext.ack of the first connect to B (-1: none)
	want      []int   // delivered by B's first connect
	// Connect message ids (raw JSON): connectIDs[i] on A's connect
	// that carries batch i (nil: no ids), idOnB on B's first connect.
	connectIDs []string
	idOnB      string
	cometd     bool // the handshake carries minimumVersion (not Faye's family)
	drain      bool // A drains (exact record) instead of dying
	told       bool // B's first connect ends the session: 410, handshake advice
}

// ack is the ext of a connect acknowledging batch n, if the case's
// session negotiated ack (else nil).
func (tt adoptCase) ack(n int) Msg {
	if tt.handshake["ack"] == true {
		return Msg{"ack": n}
	}
	return nil
}

func TestAdoptAfterOwnerDies(t *testing.T) {
	tests := []adoptCase{
		{
			name: "ack: everything acknowledged", handshake: Msg{"ack": true},
			batchesA: [][]int{{1, 2, 3}, {4, 5}}, dead: []int{6, 7}, ackOnB: 2,
			want: []int{6, 7},
		},
		{
			name: "ack: reply with the last batch lost", handshake: Msg{"ack": true},
			batchesA: [][]int{{1, 2, 3}, {4, 5}}, dead: []int{6, 7}, ackOnB: 1,
			want: []int{4, 5, 6, 7},
		},
		{
			name: "ack: only batch never acknowledged", handshake: Msg{"ack": true},
			batchesA: [][]int{{1, 2, 3}}, dead: []int{4}, ackOnB: 0,
			want: []int{1, 2, 3, 4},
		},
		{
			name: "ack: nothing delivered before the death", handshake: Msg{"ack": true},
			batchesA: nil, dead: []int{1, 2}, ackOnB: 0,
			want: []int{1, 2},
		},
		{
			// Replay without ack: the connect acknowledges implicitly, but
			// the first connect to B cannot tell whether the reply with
			// A's last batch arrived, so that batch is resent (at least
			// once; the client drops repeats by replay id).
			name: "replay: last batch resent", handshake: Msg{"replay": true},
			batchesA: [][]int{{1, 2, 3}, {4, 5}}, dead: []int{6, 7}, ackOnB: -1,
			want: []int{4, 5, 6, 7},
		},
		{
			// Faye's family (jsforce): a connect with a new id is sent only
			// after the previous reply arrived, so it acknowledges A's last
			// batch, on B too: nothing is delivered twice.
			name: "replay, Faye: a new connect id acknowledges", handshake: Msg{"replay": true},
			batchesA: [][]int{{1, 2, 3}, {4, 5}}, dead: []int{6, 7}, ackOnB: -1,
			connectIDs: []string{`"a"`, `"b"`}, idOnB: `"c"`,
			want: []int{6, 7},
		},
		{
			// A lost reply is resent by Faye with the same id: B resends
			// the batch that connect carried.
			name: "replay, Faye: a same-id retry gets the batch again", handshake: Msg{"replay": true},
			batchesA: [][]int{{1, 2, 3}, {4, 5}}, dead: []int{6, 7}, ackOnB: -1,
			connectIDs: []string{`"a"`, `"b"`}, idOnB: `"b"`,
			want: []int{4, 5, 6, 7},
		},
		{
			// A CometD-style client (minimumVersion) makes a new connect
			// after a failed one: ids tell nothing, the batch is resent.
			name: "replay, CometD: last batch resent", handshake: Msg{"replay": true}, cometd: true,
			batchesA: [][]int{{1, 2, 3}, {4, 5}}, dead: []int{6, 7}, ackOnB: -1,
			connectIDs: []string{`"4"`, `"5"`}, idOnB: `"6"`,
			want: []int{4, 5, 6, 7},
		},
		{
			// A plain session's record holds no positions: B cannot know
			// what it missed, and tells the client instead of a silent gap.
			name: "plain: told it may have missed messages", handshake: nil,
			batchesA: [][]int{{1, 2, 3}}, dead: []int{4, 5}, ackOnB: -1,
			told: true,
		},
		{
			// A drain writes exact positions: B catches up from history.
			name: "plain: drained, resumes exactly", handshake: nil, drain: true,
			batchesA: [][]int{{1, 2, 3}}, dead: []int{4, 5}, ackOnB: -1,
			want: []int{4, 5},
		},
		{
			name: "ack: drained", handshake: Msg{"ack": true}, drain: true,
			batchesA: [][]int{{1, 2, 3}, {4, 5}}, dead: []int{6, 7}, ackOnB: 2,
			want: []int{6, 7},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { runAdoptCase(t, tt) })
	}
}

// runAdoptCase delivers tt.batchesA from A, kills or drains A, publishes
// tt.dead, and checks B's first connect, then live delivery on B.
func runAdoptCase(t *testing.T, tt adoptCase) {
	const ch = "/x"
	pr := startPair(t, engine.MemoryConfig{})
	a, b := pr.a.peer, pr.b.peer
	pub := openX(t, b, nil)           // the publisher lives on B throughout
	publishX(t, b, pub, ch, 901, 902) // before the subscription: never delivered

	id := pr.subscribedOnA(t, tt.handshake, tt.cometd, ch)
	for i, batch := range tt.batchesA {
		publishX(t, b, pub, ch, batch...)
		var d []Msg
		var r Msg
		if tt.connectIDs != nil {
			d, r = pollXID(t, a, id, tt.ack(i), tt.connectIDs[i])
		} else {
			d, r = pollX(t, a, id, tt.ack(i))
		}
		if got := ns(deliveriesOf(t, d)); !slices.Equal(got, batch) {
			t.Fatalf("batch %d from A: %v, want %v", i+1, got, batch)
		}
		if tt.handshake["ack"] == true && ackID(r) != int64(i+1) {
			t.Fatalf("batch %d from A labelled ext.ack %v", i+1, r["ext"])
		}
	}
	saves := pr.store.saveCount(id)
	checkAdoption(t, pr, tt, id, pub, saves)
}

// checkAdoption is runAdoptCase from A's end: id's first connect on B,
// then a live publication from pub.
func checkAdoption(t *testing.T, pr *pair, tt adoptCase, id, pub string, saves int) {
	const ch = "/x"
	b := pr.b.peer
	if tt.drain {
		pr.drainA()
	} else {
		pr.killA()
	}
	publishX(t, b, pub, ch, tt.dead...)

	var ext Msg
	if tt.ackOnB >= 0 {
		ext = Msg{"ack": tt.ackOnB}
	}
	d, r := pollXID(t, b, id, ext, tt.idOnB)
	if tt.told {
		checkToldGap(t, pr, b, id, d, r)
		return
	}
	if r["successful"] != true || r["clientId"] != id {
		t.Fatalf("first connect to B: %v", r)
	}
	if adv, _ := r["advice"].(map[string]any); adv["reconnect"] == "handshake" {
		t.Fatalf("first connect to B asks for a handshake: %v", r)
	}
	got := deliveriesOf(t, d)
	if !slices.Equal(ns(got), tt.want) {
		t.Fatalf("B delivered %v, want %v", ns(got), tt.want)
	}
	if owner, err := pr.store.owner(id); err != nil || owner != tagB {
		t.Fatalf("record owner after adoption = %q, %v; want %s", owner, err, tagB)
	}
	if s := pr.b.b.Stats(); s.Adopted != 1 {
		t.Fatalf("B adopted %d sessions, want 1", s.Adopted)
	}
	if _, ok := pr.b.b.Session(id); !ok {
		t.Fatal("B holds no session with the same clientId")
	}
	wantLast := int64(len(tt.batchesA))
	if tt.handshake["ack"] == true {
		if len(tt.want) > 0 {
			wantLast++ // batch ids continue from A's
		}
		if ackID(r) != wantLast {
			t.Fatalf("B's first connect labelled ext.ack %v, want %d", r["ext"], wantLast)
		}
	}
	if tt.handshake["replay"] == true {
		for _, d := range got {
			if d.Replay < 0 {
				t.Fatalf("replay session got %v without a replay id", d)
			}
		}
	}
	if tt.handshake != nil && len(tt.batchesA) > 0 && saves < len(tt.batchesA)+2 {
		// handshake, subscribe, then once per delivered batch
		t.Errorf("A saved the session %d times for %d batches", saves, len(tt.batchesA))
	}

	// Live after the adoption: exactly once, then nothing more.
	publishX(t, b, pub, ch, 100)
	d, r = pollX(t, b, id, tt.ack(int(wantLast)))
	if got := ns(deliveriesOf(t, d)); !slices.Equal(got, []int{100}) {
		t.Fatalf("live after adoption: %v, want [100]", got)
	}
	if tt.handshake["ack"] == true {
		wantLast++
		if ackID(r) != wantLast {
			t.Fatalf("live batch labelled ext.ack %v, want %d", r["ext"], wantLast)
		}
	}
	if d, _ := pollX(t, b, id, tt.ack(int(wantLast))); len(d) != 0 {
		t.Fatalf("acknowledged messages delivered again: %v", d)
	}
}

// checkToldGap checks that B answered the first connect of the adopted
// session id (deliveries d, reply r) with 410 and handshake advice,
// counted a gap and ended the session: its next connect is told the same.
func checkToldGap(t *testing.T, pr *pair, b *bayeuxtest.Peer, id string, d []Msg, r Msg) {
	t.Helper()
	e, _ := r["error"].(string)
	adv, _ := r["advice"].(map[string]any)
	if r["successful"] != false || !strings.HasPrefix(e, "410:") || adv["reconnect"] != "handshake" || len(d) != 0 {
		t.Fatalf("first connect to B: %v (deliveries %v); want 410 with handshake advice", r, d)
	}
	if s := pr.b.b.Stats(); s.Gaps != 1 || s.Adopted != 1 {
		t.Fatalf("B: gaps = %d, adopted = %d; want 1, 1", s.Gaps, s.Adopted)
	}
	bayeuxtest.Eventually(t, 2*time.Second, func() error { // removed by the sweeper
		if _, ok := pr.b.b.Session(id); ok {
			return errors.New("B still holds the session it ended")
		}
		return nil
	})
	_, r = pollX(t, b, id, nil)
	if e, _ := r["error"].(string); r["successful"] != false || !strings.HasPrefix(e, "410:") {
		t.Fatalf("next connect: %v; want 410 again", r)
	}
}

// openCometDStyle is openX with a handshake that carries minimumVersion,
// as CometD's clients send it (they number their messages themselves and
// never resend a connect with the same id).
func openCometDStyle(t *testing.T, p *bayeuxtest.Peer, ext Msg) string {
	t.Helper()
	r := p.Post(Msg{"channel": "/meta/handshake", "version": "1.0", "minimumVersion": "1.0",
		"supportedConnectionTypes": []string{"long-polling"}, "ext": ext})
	if len(r) != 1 || r[0]["successful"] != true {
		t.Fatalf("handshake: %v", r)
	}
	id := r[0]["clientId"].(string)
	if _, rs := bayeuxtest.Split(p.Connect(id, nil)); len(rs) != 1 || rs[0]["successful"] != true {
		t.Fatalf("first connect: %v", rs)
	}
	return id
}

// ackID returns ext.ack of a connect reply (-1 if absent).
func ackID(r Msg) int64 {
	e, _ := r["ext"].(map[string]any)
	v, ok := e["ack"].(float64)
	if !ok {
		return -1
	}
	return int64(v)
}

// TestAdoptWhilePublishing adopts an ack session while publications keep
// arriving: those that reach B between the adoption (subscribed, recovering)
// and the catch-up from history are neither lost nor delivered twice.
func TestAdoptWhilePublishing(t *testing.T) {
	const ch, total = "/busy", 400
	tests := []struct {
		name      string
		handshake Msg
	}{
		{"ack", Msg{"ack": true}},
		{"replay", Msg{"replay": true}},
		{"ack and replay", Msg{"ack": true, "replay": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pr := startPair(t, engine.MemoryConfig{})
			a, b := pr.a.peer, pr.b.peer
			id := pr.subscribedOnA(t, tt.handshake, false, ch)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			publish := func(v int) {
				if _, err := pr.b.b.Publish(ctx, ch, json.RawMessage(fmt.Sprintf(`{"n":%d}`, v))); err != nil {
					t.Errorf("publish %d: %v", v, err)
				}
			}
			for v := 1; v <= 10; v++ {
				publish(v)
			}
			ackOn := tt.handshake["ack"] == true
			var ack int64
			ext := func() Msg {
				if ackOn {
					return Msg{"ack": ack}
				}
				return nil
			}
			d, r := pollX(t, a, id, ext())
			got := deliveriesOf(t, d)
			if !slices.Equal(ns(got), seqInts(1, 10)) {
				t.Fatalf("from A: %v", ns(got))
			}
			ack = ackID(r)
			pr.killA()

			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for v := 11; v <= total; v++ {
					publish(v)
				}
			}()
			// The client acknowledged A's batch in its first request to B.
			var fromB []delivery
			bayeuxtest.Eventually(t, 5*time.Second, func() error {
				d, r := pollX(t, b, id, ext())
				if r["successful"] != true {
					return fmt.Errorf("connect to B: %v", r)
				}
				if ackOn {
					ack = ackID(r)
				}
				fromB = append(fromB, deliveriesOf(t, d)...)
				if n := len(fromB); n == 0 || fromB[n-1].N < total {
					return fmt.Errorf("%d deliveries from B so far", n)
				}
				return nil
			})
			wg.Wait()
			want := seqInts(11, total)
			if !ackOn {
				// Replay without ack: A's last batch is resent once.
				want = seqInts(1, total)
			}
			if !slices.Equal(ns(fromB), want) {
				t.Fatalf("B delivered %d: %v; want each of %d..%d once, in order", len(fromB), ns(fromB), want[0], total)
			}
		})
	}
}

// TestAdoptGoneHistory: the adopter cannot replay what the client has not
// acknowledged (history trimmed): the session ends with 410 and handshake
// advice instead of skipping messages silently.
func TestAdoptGoneHistory(t *testing.T) {
	pr := startPair(t, engine.MemoryConfig{HistorySize: 3})
	a, b := pr.a.peer, pr.b.peer
	const ch = "/trim"
	pub := openX(t, b, nil)
	id := pr.subscribedOnA(t, Msg{"ack": true}, false, ch)
	publishX(t, b, pub, ch, 1, 2)
	if d, _ := pollX(t, a, id, Msg{"ack": 0}); len(d) != 2 {
		t.Fatalf("from A: %v", d)
	}
	pr.killA()
	publishX(t, b, pub, ch, seqInts(3, 10)...) // history keeps 8..10
	_, r := pollX(t, b, id, Msg{"ack": 1})
	e, _ := r["error"].(string)
	adv, _ := r["advice"].(map[string]any)
	if r["successful"] != false || !strings.HasPrefix(e, "410:") || adv["reconnect"] != "handshake" {
		t.Fatalf("connect after a gap: %v; want 410 with handshake advice", r)
	}
	if s := pr.b.b.Stats(); s.Gaps != 1 {
		t.Fatalf("gaps = %d, want 1", s.Gaps)
	}
}

// TestAdoptRecordTakenWhileAlive: a node whose session was claimed by
// another node (it was cut off) learns it at its next save and stops
// delivering; its held connect ends successfully with retry advice.
func TestAdoptRecordTakenWhileAlive(t *testing.T) {
	pr := startPair(t, engine.MemoryConfig{})
	a := pr.a.peer
	id := openX(t, a, Msg{"ack": true})
	// B claims the record as if A had been declared dead.
	if _, _, err := pr.store.view(tagB).Claim(context.Background(), id, tagA); err != nil {
		t.Fatal(err)
	}
	r := subscribeX(t, a, id, "/taken", nil)
	if r["successful"] != false || !strings.HasPrefix(fmt.Sprint(r["error"]), "503:") {
		t.Fatalf("subscribe on A after the takeover: %v; want 503 (session moved)", r)
	}
	if adv, _ := r["advice"].(map[string]any); adv["reconnect"] != "retry" {
		t.Fatalf("advice %v, want retry", r["advice"])
	}
	if _, ok := pr.a.b.Session(id); ok {
		t.Fatal("A still holds the session it lost")
	}
	if owner, _ := pr.store.owner(id); owner != tagB {
		t.Fatalf("A's removal changed the record owner to %q", owner)
	}
}

// acked returns the channels with a position in the stored state of id.
func (m *memStore) acked(t *testing.T, id string) []string {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	var st broker.SessionState
	if err := json.Unmarshal(m.recs[id].state, &st); err != nil {
		t.Fatalf("stored state of %s: %v", id, err)
	}
	var out []string
	for ch := range st.Acked {
		out = append(out, ch)
	}
	slices.Sort(out)
	return out
}

// TestAckedPositionsPruned: a session keeps a position (what adoption
// resumes from) only for the channels a subscription still covers: an
// unsubscribe drops the positions of the channels it uncovered, so the
// state saved with every batch does not grow with every channel ever
// delivered. A channel still covered by a wildcard keeps its position.
func TestAckedPositionsPruned(t *testing.T) {
	pr := startPair(t, engine.MemoryConfig{})
	a := pr.a.peer
	pub := openX(t, a, nil)
	id := openX(t, a, Msg{"ack": true})
	for _, ch := range []any{"/p/one", "/p/two", "/q/three", "/q/*"} {
		mustSubscribeX(t, a, id, ch)
	}
	publishX(t, a, pub, "/p/one", 1)
	publishX(t, a, pub, "/p/two", 2)
	publishX(t, a, pub, "/q/three", 3)
	publishX(t, a, pub, "/q/four", 4)
	if d, _ := pollX(t, a, id, Msg{"ack": 0}); len(d) != 4 {
		t.Fatalf("deliveries: %v", d)
	}
	pollX(t, a, id, Msg{"ack": 1}) // acknowledges the batch, saved with the next one
	tests := []struct {
		unsubscribe string
		want        []string
	}{
		{"/p/one", []string{"/p/two", "/q/four", "/q/three"}},
		{"/q/three", []string{"/p/two", "/q/four", "/q/three"}}, // still covered by /q/*
		{"/q/*", []string{"/p/two"}},
	}
	for _, tc := range tests {
		a.MustSucceed(Msg{"channel": "/meta/unsubscribe", "clientId": id, "subscription": tc.unsubscribe}) // saves the session
		if got := pr.store.acked(t, id); !slices.Equal(got, tc.want) {
			t.Errorf("after unsubscribing %q: positions of %v, want %v", tc.unsubscribe, got, tc.want)
		}
	}
}
