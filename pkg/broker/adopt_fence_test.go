package broker_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

// fencedView is a storeView with a lease the test holds or drops.
type fencedView struct {
	*storeView
	held     atomic.Bool
	mu       sync.Mutex
	local    func() []string
	regained func([]string)
}

var _ broker.Fence = (*fencedView)(nil)

func (f *fencedView) Held() bool { return f.held.Load() }

func (f *fencedView) Wait(ctx context.Context) error {
	for !f.Held() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

func (f *fencedView) WatchRegain(local func() []string, regained func([]string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.local, f.regained = local, regained
}

func (f *fencedView) Save(ctx context.Context, st *broker.SessionState) error {
	if !f.Held() {
		return broker.ErrFenced
	}
	return f.storeView.Save(ctx, st)
}

// regain takes the lease again: the sessions whose record another node
// took are reported moved, then the lease is held.
func (f *fencedView) regain() {
	f.mu.Lock()
	local, regained := f.local, f.regained
	f.mu.Unlock()
	var moved []string
	for _, id := range local() {
		if o, err := f.m.owner(id); err == nil && o != f.tag {
			moved = append(moved, id)
		}
	}
	regained(moved)
	f.held.Store(true)
}

// TestFencedNodeActsOnNothing: node A loses its lease (frozen, cut off);
// it then delivers nothing and acknowledges nothing for its session (a
// connect gets 503 with retry advice, nothing is saved), B adopts the
// session, and when A takes its lease again it ends its copy; the client
// gets from B every message A never delivered, once.
func TestFencedNodeActsOnNothing(t *testing.T) {
	const ch = "/f"
	hub := newMemHub(t, engine.MemoryConfig{})
	store, dead := newMemStore(), &deadSet{}
	fa := &fencedView{storeView: store.view(tagA)}
	fa.held.Store(true)
	ra := &testRouter{nodes: dead}
	vb := store.view(tagB)
	rb := &testRouter{nodes: dead}
	engA, engB := hub.node(), hub.node()
	a := startXNode(t, func(c *broker.Config) { c.Engine, c.IDPrefix = engA, tagA }, func(b *broker.Broker) { b.SetCluster(ra, fa) })
	b := startXNode(t, func(c *broker.Config) { c.Engine, c.IDPrefix = engB, tagB }, func(b *broker.Broker) { b.SetCluster(rb, vb) })
	for _, e := range []*hubEngine{engA, engB} {
		select {
		case <-e.ready:
		case <-time.After(2 * time.Second):
			t.Fatal("engine not run")
		}
	}
	pub := openX(t, b.peer, nil)
	id := openX(t, a.peer, Msg{"ack": true})
	if !strings.HasPrefix(id, tagA) {
		t.Fatalf("clientId %q not created by A", id)
	}
	if r := subscribeX(t, a.peer, id, ch, nil); r["successful"] != true {
		t.Fatalf("subscribe: %v", r)
	}
	publishX(t, b.peer, pub, ch, 1, 2)
	if d, _ := pollX(t, a.peer, id, Msg{"ack": 0}); !slices.Equal(ns(deliveriesOf(t, d)), []int{1, 2}) {
		t.Fatalf("before the lapse: %v", ns(deliveriesOf(t, d)))
	}

	fa.held.Store(false) // A's lease lapses
	publishX(t, b.peer, pub, ch, 3, 4)
	saves := store.saveCount(id)
	d, r := pollX(t, a.peer, id, Msg{"ack": 1})
	if len(d) != 0 || r["successful"] != false || !strings.HasPrefix(r["error"].(string), "503") {
		t.Fatalf("connect to a node without its lease: deliveries %v, reply %v; want none and 503", d, r)
	}
	if n := store.saveCount(id); n != saves {
		t.Errorf("a node without its lease saved the session (%d saves, was %d)", n, saves)
	}

	dead.kill(tagA) // B's view: A failed, its lease gone
	d, r = pollX(t, b.peer, id, Msg{"ack": 1})
	if got := ns(deliveriesOf(t, d)); !slices.Equal(got, []int{3, 4}) || r["successful"] != true {
		t.Fatalf("first connect to the adopter: %v (%v), want [3 4]", got, r)
	}

	fa.regain() // A comes back
	if _, ok := a.b.Session(id); ok {
		t.Error("A kept the session B took while A lacked its lease")
	}
	publishX(t, b.peer, pub, ch, 5)
	if d, _ := pollX(t, b.peer, id, Msg{"ack": ackID(r)}); !slices.Equal(ns(deliveriesOf(t, d)), []int{5}) {
		t.Fatalf("after A came back: %v, want [5]", ns(deliveriesOf(t, d)))
	}
}

// TestStaleConnectTakesNothing: a /meta/connect that reaches the node
// after a later message of its session (its client gave up on it: it sat
// in a frozen node, or a connection that was closed) is answered at once,
// empty. Answered normally it would take the next batch into a reply
// nobody reads, and with replay without the ack extension the client's
// next connect would acknowledge that batch: lost.
func TestStaleConnectTakesNothing(t *testing.T) {
	const ch = "/s"
	pr := startPair(t, engine.MemoryConfig{})
	a := pr.a.peer
	pub := openX(t, a, nil)
	id := openX(t, a, Msg{"replay": true})
	if r := a.Post(Msg{"id": "10", "channel": "/meta/subscribe", "clientId": id, "subscription": ch}); r[0]["successful"] != true {
		t.Fatalf("subscribe: %v", r)
	}
	connect := func(msgID string) ([]int, Msg) {
		t.Helper()
		d, r := bayeuxtest.Split(a.Post(Msg{"id": msgID, "channel": "/meta/connect", "clientId": id, "connectionType": "long-polling", "advice": Msg{"timeout": 0}}))
		if len(r) != 1 {
			t.Fatalf("connect %s replies: %v", msgID, r)
		}
		return ns(deliveriesOf(t, d)), r[0]
	}
	publishX(t, a, pub, ch, 1)
	if got, _ := connect("12"); !slices.Equal(got, []int{1}) {
		t.Fatalf("connect 12: %v, want [1]", got)
	}
	publishX(t, a, pub, ch, 2)
	if got, r := connect("11"); len(got) != 0 || r["successful"] != true {
		t.Fatalf("stale connect 11: %v (%v), want nothing, successful", got, r)
	}
	if got, _ := connect("13"); !slices.Equal(got, []int{2}) {
		t.Fatalf("connect 13: %v, want [2]", got)
	}
}

// TestStaleConnectAfterAdoption: the node that adopts a session knows the
// highest message id its previous owner processed (SessionState.Seen), so
// a /meta/connect sent before the move that reaches the adopter after it
// (it sat in a socket to a node that was frozen, then moved the session to
// that node by a hand-over) is answered empty there too, and takes no
// batch that the client's next connect would acknowledge.
func TestStaleConnectAfterAdoption(t *testing.T) {
	const ch = "/s"
	pr := startPair(t, engine.MemoryConfig{})
	a, b := pr.a.peer, pr.b.peer
	pub := openX(t, a, nil)
	id := pr.subscribedOnA(t, Msg{"replay": true}, false, ch)
	connect := func(p *bayeuxtest.Peer, msgID string) ([]int, Msg) {
		t.Helper()
		d, r := bayeuxtest.Split(p.Post(Msg{"id": msgID, "channel": "/meta/connect", "clientId": id, "connectionType": "long-polling", "advice": Msg{"timeout": 0}}))
		if len(r) != 1 {
			t.Fatalf("connect %s replies: %v", msgID, r)
		}
		return ns(deliveriesOf(t, d)), r[0]
	}
	publishX(t, a, pub, ch, 1)
	if got, _ := connect(a, "12"); !slices.Equal(got, []int{1}) {
		t.Fatalf("connect 12 on A: %v, want [1]", got)
	}
	publishX(t, a, pub, ch, 2)
	pr.killA()
	publishX(t, b, openX(t, b, nil), ch, 3)
	if got, r := connect(b, "11"); len(got) != 0 || r["successful"] != true {
		t.Fatalf("stale connect 11 on the adopter: %v (%v), want nothing, successful", got, r)
	}
	if got, _ := connect(b, "13"); !slices.Contains(got, 2) || !slices.Contains(got, 3) {
		t.Fatalf("connect 13 on the adopter: %v, want 2 and 3 among them", got)
	}
}
