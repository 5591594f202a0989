package broker_test

// Session adoption between two brokers, without Redis or gossip: an
// in-memory SessionStore with the compare-and-set semantics of
// cluster.SessionStore, a Router whose membership is the two nodes minus
// those the test declared dead (it never forwards), and one engine.Memory
// whose history both brokers share. The broker's own resolve decides.
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
		return "", broker.ErrNoRecord
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

// Owner implements broker.SessionStore.
func (v *storeView) Owner(_ context.Context, id string) (string, error) { return v.m.owner(id) }

// LeaseHeld implements broker.SessionStore: a node the test declared dead
// has lost its lease too.
func (v *storeView) LeaseHeld(context.Context, string) (bool, error) { return false, nil }

// Claim implements broker.SessionStore.
func (v *storeView) Claim(_ context.Context, id, expected string) (*broker.SessionState, string, error) {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	r, ok := v.m.recs[id]
	if !ok {
		return nil, "", broker.ErrNoRecord
	}
	if r.owner != expected {
		return nil, r.owner, broker.ErrClaimLost
	}
	r.owner = v.tag
	v.m.recs[id] = r
	var st broker.SessionState
	if err := json.Unmarshal(r.state, &st); err != nil {
		return nil, "", err
	}
	return &st, v.tag, nil
}

// deadSet is the nodes the test declared dead (or drained and gone).
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

// testRouter is the membership of nodes A and B, minus the dead: a
// request for a live owner's session "is forwarded" (the forward fails),
// and the broker adopts the sessions of dead owners.
type testRouter struct {
	nodes *deadSet
}

var _ broker.Router = (*testRouter)(nil)

func (r *testRouter) Creator(clientID string) (string, bool) {
	if len(clientID) < len(tagA) {
		return "", false
	}
	return clientID[:len(tagA)], true
}

func (r *testRouter) Alive(tag string) bool {
	return (tag == tagA || tag == tagB) && !r.nodes.dead(tag)
}

func (r *testRouter) Live() []string {
	var live []string
	for _, tag := range []string{tagA, tagB} {
		if r.Alive(tag) {
			live = append(live, tag)
		}
	}
	return live
}

func (r *testRouter) Quorum() bool                           { return true }
func (r *testRouter) FailedFor(string) (time.Duration, bool) { return 0, false }
func (r *testRouter) AdoptDelay() time.Duration              { return 0 }

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
		*r = &testRouter{nodes: pr.dead}
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

// drainA drains node A (its sessions are released) and then lets it
// leave the membership.
func (pr *pair) drainA() {
	pr.a.stop(true)
	pr.dead.kill(tagA)
}

// subscribedOnA opens a session on node A (handshake ext; with
// minimumVersion, as CometD sends it, if cometd) and subscribes it to ch.
func (pr *pair) subscribedOnA(t *testing.T, ext Msg, cometd bool, ch string) string {
	t.Helper()
	var id string
	if cometd {
		id = openCometDStyle(t, pr.a.peer, ext)
	} else {
		id = openX(t, pr.a.peer, ext)
	}
	if !strings.HasPrefix(id, tagA) {
		t.Fatalf("clientId %q not created by A", id)
	}
	mustSubscribeX(t, pr.a.peer, id, ch)
	return id
}

// mustSubscribeX subscribes id to ch and fails the test unless it succeeds.
func mustSubscribeX(t *testing.T, p *bayeuxtest.Peer, id string, ch any) {
	t.Helper()
	if r := subscribeX(t, p, id, ch, nil); r["successful"] != true {
		t.Fatalf("subscribe %v: %v", ch, r)
	}
}
