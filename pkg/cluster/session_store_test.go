package cluster

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

const storeTTL = 30 * time.Second

// storeEnv is one real redis-server with a client, and session stores of
// several node tags over it.
type storeEnv struct {
	t      *testing.T
	client *redis.Client
}

func newStoreEnv(t *testing.T) *storeEnv {
	t.Helper()
	rd := testproc.StartRedis(t)
	client := redis.NewClient(&redis.Options{Addr: rd.Addr})
	t.Cleanup(func() { _ = client.Close() })
	return &storeEnv{t: t, client: client}
}

// store returns the session store of node tag.
func (e *storeEnv) store(tag string) *SessionStore {
	return NewSessionStore(e.client, "", tag, storeTTL)
}

func storeCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// rawRecord reads a record's owner and state fields directly.
func (e *storeEnv) rawRecord(st *SessionStore, id string) (owner, state string, exists bool) {
	e.t.Helper()
	m, err := e.client.HGetAll(storeCtx(e.t), st.key(id)).Result()
	if err != nil {
		e.t.Fatalf("HGETALL %s: %v", id, err)
	}
	if len(m) == 0 {
		return "", "", false
	}
	return m["o"], m["s"], true
}

func (e *storeEnv) pttl(st *SessionStore, id string) time.Duration {
	e.t.Helper()
	d, err := e.client.PTTL(storeCtx(e.t), st.key(id)).Result()
	if err != nil {
		e.t.Fatalf("PTTL %s: %v", id, err)
	}
	return d
}

// fullState is a state with every field set, to check that a record
// round-trips exactly.
func fullState(id string) *broker.SessionState {
	return &broker.SessionState{
		ID:        id,
		BrowserID: "browser-1",
		Transport: "long-polling",
		Subs:      []string{"/a", "/b/*", "/c/**"},
		Ack:       true,
		Replay:    true,
		Acked: map[string]engine.Position{
			"/a":   {Epoch: "e1", Offset: 5},
			"/b/x": {Epoch: "e2", Offset: 0},
		},
		Batches: []broker.BatchState{
			{ID: 7, End: map[string]engine.Position{"/a": {Epoch: "e1", Offset: 9}}},
			{ID: 8, End: map[string]engine.Position{"/a": {Epoch: "e1", Offset: 11}, "/b/x": {Epoch: "e2", Offset: 3}}},
		},
		LastBatch: 8,
		Durable:   map[string][]byte{"auth": []byte(`{"user":"u1"}`), "bin": {0, 1, 2, 255}},
	}
}

func mustSave(t *testing.T, st *SessionStore, state *broker.SessionState) {
	t.Helper()
	if err := st.Save(storeCtx(t), state); err != nil {
		t.Fatalf("Save %s by %s: %v", state.ID, st.tag, err)
	}
}

func TestSessionStoreSave(t *testing.T) {
	env := newStoreEnv(t)
	a, b := env.store("nodeAA"), env.store("nodeBB")

	tests := []struct {
		name      string
		setup     func(id string) // records written before the save under test
		saver     *SessionStore
		wantErr   error
		wantOwner string
	}{
		{"missing record is created", func(string) {}, a, nil, "nodeAA"},
		{"owner saves again", func(id string) { mustSave(t, a, &broker.SessionState{ID: id}) }, a, nil, "nodeAA"},
		{"another node is refused", func(id string) { mustSave(t, a, &broker.SessionState{ID: id}) }, b, broker.ErrOwnershipLost, "nodeAA"},
		{"released record is not saved by a non-owner", func(id string) {
			if err := a.Release(storeCtx(t), []*broker.SessionState{{ID: id}}); err != nil {
				t.Fatal(err)
			}
		}, b, broker.ErrOwnershipLost, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("save%d", i)
			tt.setup(id)
			_, before, _ := env.rawRecord(a, id)
			state := fullState(id)
			err := tt.saver.Save(storeCtx(t), state)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Save: err = %v, want %v", err, tt.wantErr)
			}
			owner, raw, ok := env.rawRecord(a, id)
			if !ok {
				t.Fatal("no record after Save")
			}
			if owner != tt.wantOwner {
				t.Errorf("owner = %q, want %q", owner, tt.wantOwner)
			}
			if tt.wantErr != nil && raw != before {
				t.Errorf("refused Save changed the state: %s -> %s", before, raw)
			}
			if got, err := a.Owner(storeCtx(t), id); err != nil || got != tt.wantOwner {
				t.Errorf("Owner = %q, %v; want %q", got, err, tt.wantOwner)
			}
			if d := env.pttl(a, id); d <= 0 || d > storeTTL {
				t.Errorf("PTTL = %v, want in (0, %v]", d, storeTTL)
			}
		})
	}
}

func TestSessionStoreClaim(t *testing.T) {
	env := newStoreEnv(t)
	a, b := env.store("nodeAA"), env.store("nodeBB")

	tests := []struct {
		name      string
		setup     func(id string)
		expected  string // owner the claimer expects
		wantErr   error
		wantOwner string // Claim's returned owner
		wantState bool
		recOwner  string // owner of the record afterwards ("-": no record)
	}{
		{"expected owner", func(id string) { mustSave(t, a, fullState(id)) }, "nodeAA", nil, "nodeBB", true, "nodeBB"},
		{"wrong expected owner", func(id string) { mustSave(t, a, fullState(id)) }, "nodeCC", broker.ErrClaimLost, "nodeAA", false, "nodeAA"},
		{"released record", func(id string) {
			if err := a.Release(storeCtx(t), []*broker.SessionState{fullState(id)}); err != nil {
				t.Fatal(err)
			}
		}, "", nil, "nodeBB", true, "nodeBB"},
		{"released record, stale expectation", func(id string) {
			if err := a.Release(storeCtx(t), []*broker.SessionState{fullState(id)}); err != nil {
				t.Fatal(err)
			}
		}, "nodeAA", broker.ErrClaimLost, "", false, ""},
		{"missing record", func(string) {}, "nodeAA", broker.ErrNoRecord, "", false, "-"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("claim%d", i)
			tt.setup(id)
			st, owner, err := b.Claim(storeCtx(t), id, tt.expected)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Claim: err = %v, want %v", err, tt.wantErr)
			}
			if owner != tt.wantOwner {
				t.Errorf("Claim owner = %q, want %q", owner, tt.wantOwner)
			}
			if tt.wantState {
				if want := fullState(id); !reflect.DeepEqual(st, want) {
					t.Errorf("claimed state:\n got %+v\nwant %+v", st, want)
				}
			} else if st != nil {
				t.Errorf("Claim returned a state %+v, want none", st)
			}
			recOwner, _, ok := env.rawRecord(a, id)
			if !ok {
				recOwner = "-"
			}
			if recOwner != tt.recOwner {
				t.Errorf("record owner = %q, want %q", recOwner, tt.recOwner)
			}
			if tt.wantState {
				if d := env.pttl(a, id); d <= 0 || d > storeTTL {
					t.Errorf("PTTL after claim = %v", d)
				}
				// The loser of the race learns it at its next write.
				if err := a.Save(storeCtx(t), fullState(id)); !errors.Is(err, broker.ErrOwnershipLost) {
					t.Errorf("previous owner's Save after claim: %v, want ErrOwnershipLost", err)
				}
			}
		})
	}
}

func TestSessionStoreRelease(t *testing.T) {
	env := newStoreEnv(t)
	a, b := env.store("nodeAA"), env.store("nodeBB")
	ctx := storeCtx(t)

	if err := a.Release(ctx, nil); err != nil {
		t.Fatalf("Release(nil): %v", err)
	}

	// own: saved by a; taken: saved by a, then claimed by b (a was cut
	// off); fresh: never saved.
	mustSave(t, a, &broker.SessionState{ID: "own", Subs: []string{"/old"}})
	mustSave(t, a, &broker.SessionState{ID: "taken", Subs: []string{"/old"}})
	if _, _, err := b.Claim(ctx, "taken", "nodeAA"); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(ctx, &broker.SessionState{ID: "taken", Subs: []string{"/by-b"}}); err != nil {
		t.Fatal(err)
	}
	released := []*broker.SessionState{fullState("own"), fullState("taken"), fullState("fresh")}
	if err := a.Release(ctx, released); err != nil {
		t.Fatalf("Release: %v", err)
	}

	tests := []struct {
		id        string
		wantOwner string
		wantSubs  []string
	}{
		{"own", "", fullState("own").Subs},
		{"taken", "nodeBB", []string{"/by-b"}},
		{"fresh", "", fullState("fresh").Subs},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			owner, err := a.Owner(ctx, tt.id)
			if err != nil || owner != tt.wantOwner {
				t.Fatalf("Owner = %q, %v; want %q", owner, err, tt.wantOwner)
			}
			st, _, err := b.Claim(ctx, tt.id, tt.wantOwner)
			if err != nil {
				t.Fatalf("Claim: %v", err)
			}
			if !slices.Equal(st.Subs, tt.wantSubs) {
				t.Errorf("subs = %v, want %v", st.Subs, tt.wantSubs)
			}
			if tt.wantOwner == "" && !reflect.DeepEqual(st, fullState(tt.id)) {
				t.Errorf("released state:\n got %+v\nwant %+v", st, fullState(tt.id))
			}
		})
	}
}

func TestSessionStoreDelete(t *testing.T) {
	env := newStoreEnv(t)
	a, b := env.store("nodeAA"), env.store("nodeBB")
	tests := []struct {
		name     string
		setup    func(id string)
		deleter  *SessionStore
		wantKept bool
	}{
		{"owner deletes", func(id string) { mustSave(t, a, fullState(id)) }, a, false},
		{"non-owner cannot", func(id string) { mustSave(t, a, fullState(id)) }, b, true},
		{"released record is not deleted", func(id string) {
			if err := a.Release(storeCtx(t), []*broker.SessionState{fullState(id)}); err != nil {
				t.Fatal(err)
			}
		}, a, true},
		{"missing record", func(string) {}, a, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("del%d", i)
			tt.setup(id)
			if err := tt.deleter.Delete(storeCtx(t), id); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			_, _, kept := env.rawRecord(a, id)
			if kept != tt.wantKept {
				t.Errorf("record kept = %v, want %v", kept, tt.wantKept)
			}
		})
	}
}

func TestSessionStoreRefresh(t *testing.T) {
	env := newStoreEnv(t)
	a := env.store("nodeAA")
	ctx := storeCtx(t)
	const short = 2 * time.Second

	tests := []struct {
		name    string
		n       int            // ids refreshed
		present func(int) bool // which of them have a record
	}{
		{"empty", 0, nil},
		{"all present", 3, func(int) bool { return true }},
		{"none present", 3, func(int) bool { return false }},
		{"mixed", 5, func(i int) bool { return i%2 == 0 }},
		// More than one pipelined chunk of 1000: missing ids in every chunk
		// must be reported as themselves.
		{"several chunks", 2500, func(i int) bool { return i%7 != 3 }},
	}
	for ti, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids := make([]string, tt.n)
			var states []*broker.SessionState
			var want []string
			for i := range ids {
				ids[i] = fmt.Sprintf("ref%d-%d", ti, i)
				if tt.present(i) {
					states = append(states, &broker.SessionState{ID: ids[i]})
				} else {
					want = append(want, ids[i])
				}
			}
			if err := a.Release(ctx, states); err != nil {
				t.Fatal(err)
			}
			// Shorten the present records' lifetime, so that a refresh
			// visibly extends it.
			pipe := env.client.Pipeline()
			for _, st := range states {
				pipe.PExpire(ctx, a.key(st.ID), short)
			}
			if len(states) > 0 {
				if _, err := pipe.Exec(ctx); err != nil {
					t.Fatal(err)
				}
			}
			missing, err := a.Refresh(ctx, ids)
			if err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			if !slices.Equal(missing, want) {
				t.Fatalf("missing = %d ids %v, want %d ids %v", len(missing), head(missing), len(want), head(want))
			}
			for _, st := range states {
				if d := env.pttl(a, st.ID); d <= short || d > storeTTL {
					t.Fatalf("%s: PTTL after refresh = %v, want in (%v, %v]", st.ID, d, short, storeTTL)
				}
			}
			// Refresh creates nothing.
			for _, id := range want {
				if _, _, ok := env.rawRecord(a, id); ok {
					t.Fatalf("Refresh created a record for %s", id)
				}
			}
		})
	}
}

func head(ids []string) []string { return ids[:min(len(ids), 5)] }

func TestSessionStoreOwner(t *testing.T) {
	env := newStoreEnv(t)
	a, b := env.store("nodeAA"), env.store("nodeBB")
	ctx := storeCtx(t)
	mustSave(t, a, fullState("owned"))
	if err := a.Release(ctx, []*broker.SessionState{fullState("released")}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id        string
		wantOwner string
		wantErr   error
	}{
		{"owned", "nodeAA", nil},
		{"released", "", nil},
		{"missing", "", broker.ErrNoRecord},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			// Any node reads the same owner.
			for _, st := range []*SessionStore{a, b} {
				owner, err := st.Owner(ctx, tt.id)
				if owner != tt.wantOwner || !errors.Is(err, tt.wantErr) {
					t.Errorf("%s: Owner = %q, %v; want %q, %v", st.tag, owner, err, tt.wantOwner, tt.wantErr)
				}
			}
		})
	}
}
