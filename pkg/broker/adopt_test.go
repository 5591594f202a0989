package broker_test

// Session adoption between two brokers, without Redis or gossip: an
// in-memory SessionStore with the compare-and-set semantics of
// cluster.SessionStore, a Router that adopts the sessions of nodes the test
// declared dead, and one engine.Memory whose history both brokers share.
//
// engine.Memory delivers to a single Handler (Run registers it, the last
// call wins, and it is never unregistered), so two brokers cannot both Run
// on it directly. memHub is that single Handler and fans publications out
// to each broker's view of the engine, by the patterns that broker
// subscribed; everything else (offsets, history, Head) is the shared
// Memory's.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

// memHub is the shared Memory's Handler.
type memHub struct {
	mem *engine.Memory

	mu    sync.RWMutex
	nodes []*hubEngine
	probe atomic.Bool // a probe publication reached the hub
}

// newMemHub runs mem with the hub as its handler until the test ends.
func newMemHub(t *testing.T, cfg engine.MemoryConfig) *memHub {
	t.Helper()
	h := &memHub{mem: engine.NewMemory(cfg)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.mem.Run(ctx, h); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	// Run registers the handler asynchronously: probe until it delivers.
	const probe = "/hub-probe"
	if err := h.mem.Subscribe(ctx, probe); err != nil {
		t.Fatal(err)
	}
	bayeuxtest.Eventually(t, 2*time.Second, func() error {
		if _, err := h.mem.Publish(ctx, probe, []byte(`{}`)); err != nil {
			return err
		}
		if !h.probe.Load() {
			return errors.New("memory engine handler not registered yet")
		}
		return nil
	})
	return h
}

func (h *memHub) OnPublication(p *engine.Publication) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if p.Channel == "/hub-probe" {
		h.probe.Store(true)
	}
	for _, n := range h.nodes {
		if n.matches(p.Channel) {
			n.h.OnPublication(p)
		}
	}
}

func (h *memHub) OnGap(ch string, from, to engine.Position) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, n := range h.nodes {
		n.h.OnGap(ch, from, to)
	}
}

// node returns a new broker-facing view of the shared engine.
func (h *memHub) node() *hubEngine {
	return &hubEngine{hub: h, patterns: map[string]int{}, ready: make(chan struct{})}
}

// hubEngine is one broker's engine: the shared Memory, with deliveries
// limited to the patterns this broker subscribed.
type hubEngine struct {
	hub *memHub
	h   engine.Handler // set by Run, under hub.mu

	mu       sync.Mutex
	patterns map[string]int

	ready     chan struct{} // closed once Run registered the handler
	readyOnce sync.Once
}

var _ engine.Engine = (*hubEngine)(nil)

func (e *hubEngine) matches(ch string) bool {
	var buf [channel.MaxDepth + 2]string
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range channel.Candidates(buf[:0], ch) {
		if e.patterns[p] > 0 {
			return true
		}
	}
	return false
}

func (e *hubEngine) Publish(ctx context.Context, ch string, payload []byte) (engine.Publication, error) {
	return e.hub.mem.Publish(ctx, ch, payload)
}

func (e *hubEngine) Subscribe(ctx context.Context, pattern string) error {
	e.mu.Lock()
	e.patterns[pattern]++
	e.mu.Unlock()
	return e.hub.mem.Subscribe(ctx, pattern)
}

func (e *hubEngine) Unsubscribe(ctx context.Context, pattern string) error {
	e.mu.Lock()
	if e.patterns[pattern]--; e.patterns[pattern] <= 0 {
		delete(e.patterns, pattern)
	}
	e.mu.Unlock()
	return e.hub.mem.Unsubscribe(ctx, pattern)
}

func (e *hubEngine) History(ctx context.Context, ch string, after engine.Position, limit int) ([]engine.Publication, error) {
	return e.hub.mem.History(ctx, ch, after, limit)
}

func (e *hubEngine) Head(ctx context.Context, ch string) (engine.Position, error) {
	return e.hub.mem.Head(ctx, ch)
}

// Channels lists the shared Memory's channels matching pattern.
func (e *hubEngine) Channels(ctx context.Context, pattern string) ([]string, error) {
	return e.hub.mem.Channels(ctx, pattern)
}

// Run delivers to h until ctx ends (the broker stops or "dies").
func (e *hubEngine) Run(ctx context.Context, h engine.Handler) error {
	e.hub.mu.Lock()
	e.h = h
	e.hub.nodes = append(e.hub.nodes, e)
	e.hub.mu.Unlock()
	e.readyOnce.Do(func() { close(e.ready) })
	<-ctx.Done()
	e.hub.mu.Lock()
	e.hub.nodes = slices.DeleteFunc(e.hub.nodes, func(n *hubEngine) bool { return n == e })
	e.hub.mu.Unlock()
	return nil
}

func (e *hubEngine) Close() error { return nil }

// memStore is the records of every node, under one mutex, with the
// semantics of cluster.SessionStore: every write is a compare-and-set on
// the owner. States are kept as JSON, as Redis keeps them.
type memStore struct {
	mu    sync.Mutex
	recs  map[string]memRecord
	saves map[string]int // Save calls per session id
}

type memRecord struct {
	owner string // "" once released
	state []byte
}

var (
	errNoRecord  = errors.New("memstore: no record")
	errClaimLost = errors.New("memstore: claimed by another node")
)

func newMemStore() *memStore {
	return &memStore{recs: map[string]memRecord{}, saves: map[string]int{}}
}

// view is node tag's broker.SessionStore.
func (m *memStore) view(tag string) *storeView { return &storeView{m: m, tag: tag} }

func (m *memStore) owner(id string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[id]
	if !ok {
		return "", errNoRecord
	}
	return r.owner, nil
}

func (m *memStore) saveCount(id string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.saves[id]
}

type storeView struct {
	m   *memStore
	tag string
}

var _ broker.SessionStore = (*storeView)(nil)

func (v *storeView) Save(ctx context.Context, st *broker.SessionState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	v.m.saves[st.ID]++
	if r, ok := v.m.recs[st.ID]; ok && r.owner != v.tag {
		return broker.ErrOwnershipLost
	}
	v.m.recs[st.ID] = memRecord{owner: v.tag, state: b}
	return ctx.Err()
}

func (v *storeView) Delete(_ context.Context, id string) error {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	if r, ok := v.m.recs[id]; ok && r.owner == v.tag {
		delete(v.m.recs, id)
	}
	return nil
}

func (v *storeView) Refresh(_ context.Context, ids []string) ([]string, error) {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	var missing []string
	for _, id := range ids {
		if _, ok := v.m.recs[id]; !ok {
			missing = append(missing, id)
		}
	}
	return missing, nil
}

func (v *storeView) Release(_ context.Context, states []*broker.SessionState) error {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	for _, st := range states {
		b, err := json.Marshal(st)
		if err != nil {
			return err
		}
		if r, ok := v.m.recs[st.ID]; ok && r.owner != v.tag {
			continue
		}
		v.m.recs[st.ID] = memRecord{owner: "", state: b}
	}
	return nil
}

// claim takes id over for this node if its owner is still expected.
func (v *storeView) claim(id, expected string) (*broker.SessionState, string, error) {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	r, ok := v.m.recs[id]
	if !ok {
		return nil, "", errNoRecord
	}
	if r.owner != expected {
		return nil, r.owner, errClaimLost
	}
	r.owner = v.tag
	v.m.recs[id] = r
	var st broker.SessionState
	if err := json.Unmarshal(r.state, &st); err != nil {
		return nil, "", err
	}
	return &st, v.tag, nil
}

// deadSet is the nodes the test declared dead.
type deadSet struct {
	mu   sync.Mutex
	tags map[string]bool
}

func (d *deadSet) kill(tag string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.tags == nil {
		d.tags = map[string]bool{}
	}
	d.tags[tag] = true
}

func (d *deadSet) dead(tag string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tags[tag]
}

// testRouter adopts the sessions whose owner is dead or released (or this
// node, which no longer holds it); it never forwards.
type testRouter struct {
	store   *storeView
	nodes   *deadSet
	mu      sync.Mutex
	adopted []string
}

var _ broker.Router = (*testRouter)(nil)

func (r *testRouter) Resolve(_ context.Context, clientID string, _ int) (broker.Route, error) {
	owner, err := r.store.m.owner(clientID)
	if errors.Is(err, errNoRecord) {
		return broker.Route{}, nil
	}
	if owner != "" && owner != r.store.tag && !r.nodes.dead(owner) {
		return broker.Route{Unavailable: true}, nil // would forward to owner
	}
	st, _, err := r.store.claim(clientID, owner)
	switch {
	case errors.Is(err, errNoRecord):
		return broker.Route{}, nil
	case errors.Is(err, errClaimLost):
		return broker.Route{Unavailable: true}, nil
	case err != nil:
		return broker.Route{}, err
	}
	r.mu.Lock()
	r.adopted = append(r.adopted, clientID)
	r.mu.Unlock()
	return broker.Route{Adopt: st}, nil
}

func (r *testRouter) Forward(context.Context, string, *broker.ForwardedRequest) (*broker.ForwardedResponse, error) {
	return nil, errors.New("test router does not forward")
}

func (r *testRouter) SessionOp(context.Context, string, string, broker.SessionOpKind) (bool, error) {
	return false, errors.New("test router does not forward")
}

// pair is two brokers sharing one engine history and one session store.
type pair struct {
	store  *memStore
	dead   *deadSet
	a, b   *xnode
	ra, rb *testRouter
}

const tagA, tagB = "nodeaa", "nodebb"

func startPair(t *testing.T, memCfg engine.MemoryConfig) *pair {
	t.Helper()
	hub := newMemHub(t, memCfg)
	pr := &pair{store: newMemStore(), dead: &deadSet{}}
	start := func(tag string, r **testRouter) *xnode {
		eng := hub.node()
		v := pr.store.view(tag)
		*r = &testRouter{store: v, nodes: pr.dead}
		n := startXNode(t, func(c *broker.Config) {
			c.Engine = eng
			c.IDPrefix = tag
		}, func(b *broker.Broker) { b.SetCluster(*r, v) })
		select {
		case <-eng.ready:
		case <-time.After(2 * time.Second):
			t.Fatalf("broker %s did not run its engine", tag)
		}
		return n
	}
	pr.a = start(tagA, &pr.ra)
	pr.b = start(tagB, &pr.rb)
	return pr
}

// killA crashes node A: no drain, no record written; its engine view
// stops delivering.
func (pr *pair) killA() {
	pr.dead.kill(tagA)
	pr.a.stop(false)
}

func TestAdoptAfterOwnerDies(t *testing.T) {
	const ch = "/x"
	tests := []struct {
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
	}{
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
		t.Run(tt.name, func(t *testing.T) {
			pr := startPair(t, engine.MemoryConfig{})
			a, b := pr.a.peer, pr.b.peer
			pub := openX(t, b, nil)           // the publisher lives on B throughout
			publishX(t, b, pub, ch, 901, 902) // before the subscription: never delivered

			var id string
			if tt.cometd {
				id = openCometDStyle(t, a, tt.handshake)
			} else {
				id = openX(t, a, tt.handshake)
			}
			if !strings.HasPrefix(id, tagA) {
				t.Fatalf("clientId %q not created by A", id)
			}
			if r := subscribeX(t, a, id, ch, nil); r["successful"] != true {
				t.Fatalf("subscribe: %v", r)
			}
			ack := func(n int) Msg {
				if tt.handshake["ack"] == true {
					return Msg{"ack": n}
				}
				return nil
			}
			for i, batch := range tt.batchesA {
				publishX(t, b, pub, ch, batch...)
				var d []Msg
				var r Msg
				if tt.connectIDs != nil {
					d, r = pollXID(t, a, id, ack(i), tt.connectIDs[i])
				} else {
					d, r = pollX(t, a, id, ack(i))
				}
				if got := ns(deliveriesOf(t, d)); !slices.Equal(got, batch) {
					t.Fatalf("batch %d from A: %v, want %v", i+1, got, batch)
				}
				if tt.handshake["ack"] == true && ackID(r) != int64(i+1) {
					t.Fatalf("batch %d from A labelled ext.ack %v", i+1, r["ext"])
				}
			}
			saves := pr.store.saveCount(id)

			if tt.drain {
				pr.a.stop(true)
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
			d, r = pollX(t, b, id, ack(int(wantLast)))
			if got := ns(deliveriesOf(t, d)); !slices.Equal(got, []int{100}) {
				t.Fatalf("live after adoption: %v, want [100]", got)
			}
			if tt.handshake["ack"] == true {
				wantLast++
				if ackID(r) != wantLast {
					t.Fatalf("live batch labelled ext.ack %v, want %d", r["ext"], wantLast)
				}
			}
			if d, _ := pollX(t, b, id, ack(int(wantLast))); len(d) != 0 {
				t.Fatalf("acknowledged messages delivered again: %v", d)
			}
		})
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
			id := openX(t, a, tt.handshake)
			if r := subscribeX(t, a, id, ch, nil); r["successful"] != true {
				t.Fatalf("subscribe: %v", r)
			}
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
	id := openX(t, a, Msg{"ack": true})
	if r := subscribeX(t, a, id, ch, nil); r["successful"] != true {
		t.Fatalf("subscribe: %v", r)
	}
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
	if _, _, err := pr.store.view(tagB).claim(id, tagA); err != nil {
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
