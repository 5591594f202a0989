package cluster

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
)

// leasedStore returns the session store of node tag with a lease of ttl
// (not renewed unless the test runs it), taken once.
func (e *storeEnv) leasedStore(tag string, ttl time.Duration) (*SessionStore, *Lease) {
	e.t.Helper()
	st := e.store(tag)
	l := NewLease(e.client, "", tag, ttl, ttl/4, slog.New(slog.DiscardHandler))
	st.UseLease(l)
	if err := l.Acquire(storeCtx(e.t)); err != nil {
		e.t.Fatal(err)
	}
	return st, l
}

// TestLeaseExpiresLocallyFirst: the node sees its lease lapse (on its own
// clock, from the renewal's send time) while Redis still holds the key,
// so a peer can never adopt while the node still believes it acts. The
// node's link to Redis is slow (100 ms each way, through a proxy): Redis
// starts the key's time to live when the command arrives, later than the
// node's send, so the margin is the link's delay. A renewed lease stays
// held.
func TestLeaseExpiresLocallyFirst(t *testing.T) {
	e := newStoreEnv(t)
	const ttl, delay = 400 * time.Millisecond, 100 * time.Millisecond
	proxy := testproc.StartFaultProxy(t, e.client.Options().Addr)
	proxy.Delay(delay)
	slow := redis.NewClient(&redis.Options{Addr: proxy.Addr})
	t.Cleanup(func() { _ = slow.Close() })
	st := NewSessionStore(slow, "", "aaaaaa", storeTTL)
	l := NewLease(slow, "", "aaaaaa", ttl, ttl/4, slog.New(slog.DiscardHandler))
	st.UseLease(l)
	ctx := storeCtx(t)
	// A connection made first: its set-up costs round trips of its own.
	if err := slow.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := l.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if !l.Held() || !st.Held() {
		t.Fatal("lease not held after Acquire")
	}
	deadline := time.Now().Add(2 * ttl)
	for l.Held() {
		if time.Now().After(deadline) {
			t.Fatal("lease still held locally 2 TTLs after it was taken, never renewed")
		}
		time.Sleep(time.Millisecond)
	}
	held, err := LeaseHeld(ctx, e.client, "", "aaaaaa") // direct, no delay
	if err != nil {
		t.Fatal(err)
	}
	if !held {
		t.Fatal("Redis expired the lease before the node saw it lapse")
	}
	if err := st.Save(ctx, fullState("aaaaaa-s1")); !errors.Is(err, broker.ErrFenced) {
		t.Fatalf("save without the lease: %v, want ErrFenced", err)
	}
	waitFor(t, 2*time.Second, "Redis to expire the lease", func() bool {
		held, err := LeaseHeld(ctx, e.client, "", "aaaaaa")
		return err == nil && !held
	})

	// Renewed (over a fast link), it stays held across several TTLs;
	// taken again after its lapse, it has a new generation.
	l = NewLease(e.client, "", "aaaaaa", ttl, ttl/4, slog.New(slog.DiscardHandler))
	l.st.Store(&leaseState{gen: 1}) // the lapsed generation
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := l.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if gen, _ := l.current(); gen != 2 {
		t.Errorf("generation after taking the lease again = %d, want 2", gen)
	}
	for end := time.Now().Add(3 * ttl); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if !l.Held() {
			t.Fatal("renewed lease lapsed")
		}
	}
}

// TestLeaseFencing: a node whose lease lapsed writes nothing; a peer
// adopts its session only once the lease is gone; when the node takes
// its lease again it learns which sessions moved (and keeps the others,
// now under its new generation, so that a late claim of the old owner
// fails); a record of its own older generation is its own to save.
func TestLeaseFencing(t *testing.T) {
	e := newStoreEnv(t)
	const ttl = 300 * time.Millisecond
	a, la := e.leasedStore("aaaaaa", ttl)
	b, _ := e.leasedStore("bbbbbb", time.Minute)
	ctx := storeCtx(t)
	for _, id := range []string{"moved", "kept", "late"} {
		mustSave(t, a, fullState(id))
	}
	if owner, _, _ := e.rawRecord(a, "kept"); owner != "aaaaaa.1" {
		t.Fatalf("owner = %q, want aaaaaa.1", owner)
	}
	if held, err := b.LeaseHeld(ctx, "aaaaaa"); err != nil || !held {
		t.Fatalf("peer sees the lease held = %v (%v), want true", held, err)
	}

	// The lease lapses (not renewed: the node is frozen).
	waitFor(t, 2*time.Second, "the lease to be gone from Redis", func() bool {
		held, err := b.LeaseHeld(ctx, "aaaaaa")
		return err == nil && !held
	})
	if la.Held() {
		t.Fatal("lease held locally after Redis expired it")
	}
	if _, _, err := a.Claim(ctx, "other", "cccccc"); !errors.Is(err, broker.ErrFenced) {
		t.Errorf("claim without the lease: %v, want ErrFenced", err)
	}
	if _, owner, err := b.Claim(ctx, "moved", "aaaaaa.1"); err != nil || owner != "bbbbbb.1" {
		t.Fatalf("peer claim = %q, %v; want bbbbbb.1", owner, err)
	}

	// The node comes back: it takes its lease again and re-validates.
	var moved []string
	a.WatchRegain(func() []string { return []string{"moved", "kept", "late", "gone"} }, func(m []string) { moved = m })
	if err := la.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(moved, []string{"moved"}) {
		t.Errorf("moved = %v, want [moved] (a missing record is kept)", moved)
	}
	if owner, _, _ := e.rawRecord(a, "kept"); owner != "aaaaaa.2" {
		t.Errorf("kept: owner = %q, want aaaaaa.2", owner)
	}
	if _, cur, err := b.Claim(ctx, "late", "aaaaaa.1"); !errors.Is(err, broker.ErrClaimLost) || cur != "aaaaaa.2" {
		t.Errorf("late claim of the old generation = %q, %v; want lost to aaaaaa.2", cur, err)
	}
	if err := a.Save(ctx, fullState("moved")); !errors.Is(err, broker.ErrOwnershipLost) {
		t.Errorf("save of a moved session: %v, want ErrOwnershipLost", err)
	}

	// A record still under an older generation of this node (written
	// before a lapse, re-validation not yet reached it) is saved, not
	// dropped.
	e.client.HSet(ctx, a.key("kept"), "o", "aaaaaa.1")
	mustSave(t, a, fullState("kept"))
	if owner, _, _ := e.rawRecord(a, "kept"); owner != "aaaaaa.2" {
		t.Errorf("kept after save: owner = %q, want aaaaaa.2", owner)
	}
	// A newer generation than the writer's is refused, not overwritten.
	e.client.HSet(ctx, a.key("kept"), "o", "aaaaaa.9")
	if err := a.Save(ctx, fullState("kept")); !errors.Is(err, broker.ErrFenced) {
		t.Errorf("save under a stale generation: %v, want ErrFenced", err)
	}
	// Delete works for any generation of this node, never for a peer's.
	if err := a.Delete(ctx, "kept"); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := e.rawRecord(a, "kept"); ok {
		t.Error("delete left this node's record")
	}
	if err := a.Delete(ctx, "moved"); err != nil {
		t.Fatal(err)
	}
	if owner, _, _ := e.rawRecord(a, "moved"); owner != "bbbbbb.1" {
		t.Errorf("delete by the old owner touched the peer's record: owner = %q", owner)
	}
}

// TestLeaseStopIsQuiet: stopping the renewals (the node shuts down) is
// not a failure and logs no warning. The link to Redis is slow (150 ms
// each way): a renewal outlasts the renewal interval, so that it is in
// flight when Run's context ends and the next tick is already due when it
// returns (Run may then start one more step with the ended context, whose
// command fails at once).
func TestLeaseStopIsQuiet(t *testing.T) {
	e := newStoreEnv(t)
	const ttl, delay = time.Second, 150 * time.Millisecond
	proxy := testproc.StartFaultProxy(t, e.client.Options().Addr)
	slow := redis.NewClient(&redis.Options{Addr: proxy.Addr})
	t.Cleanup(func() { _ = slow.Close() })
	var logged bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &logged}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for i := range 6 {
		l := NewLease(slow, "", "aaaaaa", ttl, ttl/4, log)
		proxy.Delay(0) // taken over a fast link (its re-validation must fit in the TTL)
		if err := l.Acquire(storeCtx(t)); err != nil {
			t.Fatal(err)
		}
		proxy.Delay(delay)
		rctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); l.Run(rctx) }()
		time.Sleep(ttl/2 + time.Duration(i)*ttl/7) // a few renewals, then stop mid-flight
		cancel()
		<-done
	}
	mu.Lock()
	defer mu.Unlock()
	if logged.Len() > 0 {
		t.Fatalf("stopping the lease logged:\n%s", logged.String())
	}
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (lw *lockedWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.w.Write(p)
}
