package demo

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// registries returns the two Registry implementations, fresh: in memory,
// and in a real redis-server (the test fails if it is not installed).
func registries(t *testing.T) map[string]Registry {
	t.Helper()
	r := testproc.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return map[string]Registry{"memory": NewMemoryRegistry(), "redis": NewRedisRegistry(c)}
}

func names(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRegistryContract(t *testing.T) {
	for name, reg := range registries(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			now := time.Now()
			later := now.Add(time.Minute)
			var last int64
			grew := func(s Snapshot, what string) {
				t.Helper()
				if s.Version <= last {
					t.Fatalf("%s: version %d did not grow past %d", what, s.Version, last)
				}
				last = s.Version
			}

			s, changed, removed, err := reg.Join(ctx, "r1", Member{ID: "b", Name: "bob", ClientID: "c1", Expires: later}, now)
			if err != nil || !changed || len(removed) != 0 || !equal(names(s.Members), []string{"bob"}) {
				t.Fatalf("first join: %+v %v %v %v", s, changed, removed, err)
			}
			grew(s, "first join")
			s, changed, _, _ = reg.Join(ctx, "r1", Member{ID: "a", Name: "alice", ClientID: "c2", Expires: later}, now)
			if !changed || !equal(names(s.Members), []string{"alice", "bob"}) {
				t.Fatalf("second join: %+v %v", s, changed)
			}
			grew(s, "second join")
			// A refresh (same name, new session) changes nothing others see.
			s, changed, _, _ = reg.Join(ctx, "r1", Member{ID: "b", Name: "bob", ClientID: "c3", Expires: later}, now)
			if changed || s.Version != last || len(s.Members) != 2 {
				t.Fatalf("refresh: %+v %v (version %d)", s, changed, last)
			}
			// A new name is a change, at the same instant too.
			s, changed, _, _ = reg.Join(ctx, "r1", Member{ID: "b", Name: "bobby", ClientID: "c3", Expires: later}, now)
			if !changed || !equal(names(s.Members), []string{"alice", "bobby"}) {
				t.Fatalf("rename: %+v %v", s, changed)
			}
			grew(s, "rename")
			// Other rooms are separate.
			s, _, _, _ = reg.Join(ctx, "r2", Member{ID: "a", Name: "alice", ClientID: "c2", Expires: later}, now)
			if !equal(names(s.Members), []string{"alice"}) {
				t.Fatalf("other room: %+v", s)
			}

			// Leave bound to a session: only the one that last joined.
			s, left, _, _ := reg.Leave(ctx, "r1", "b", "c1", now)
			if left || len(s.Members) != 2 {
				t.Fatalf("leave by an older session: %+v %v", s, left)
			}
			s, left, _, _ = reg.Leave(ctx, "r1", "b", "c3", now)
			if !left || !equal(names(s.Members), []string{"alice"}) {
				t.Fatalf("leave by its session: %+v %v", s, left)
			}
			grew(s, "leave")
			s, left, _, _ = reg.Leave(ctx, "r1", "nobody", "", now)
			if left || len(s.Members) != 1 {
				t.Fatalf("leave of a stranger: %+v %v", s, left)
			}

			// Expiry: a member past its time goes at the next call that
			// touches the room, once.
			_, _, _, _ = reg.Join(ctx, "r1", Member{ID: "e", Name: "eve", ClientID: "c4", Expires: now.Add(time.Second)}, now)
			last = 0
			t2 := now.Add(2 * time.Second)
			s, _, removed, _ = reg.Join(ctx, "r1", Member{ID: "a", Name: "alice", ClientID: "c2", Expires: later}, t2)
			if !equal(names(removed), []string{"eve"}) || !equal(names(s.Members), []string{"alice"}) {
				t.Fatalf("join after expiry: %+v removed %v", s, removed)
			}
			grew(s, "expiry by join")
			_, _, _, _ = reg.Join(ctx, "r2", Member{ID: "f", Name: "fay", ClientID: "c5", Expires: t2.Add(time.Second)}, t2)
			rms, err := reg.Expire(ctx, later.Add(time.Second))
			if err != nil || len(rms) != 2 {
				t.Fatalf("expire: %+v %v", rms, err)
			}
			got := map[string][]string{}
			for _, r := range rms {
				got[r.Snapshot.Room] = names(r.Removed)
				if len(r.Snapshot.Members) != 0 {
					t.Fatalf("expire left members: %+v", r)
				}
			}
			if !equal(got["r1"], []string{"alice"}) || !equal(got["r2"], []string{"alice", "fay"}) {
				t.Fatalf("expired: %v", got)
			}
			if rms, _ := reg.Expire(ctx, later.Add(time.Second)); len(rms) != 0 {
				t.Fatalf("second expire removed again: %+v", rms)
			}

			// The version of a room that emptied still grows when it fills
			// again (its clock term).
			refill := later.Add(2 * time.Second)
			s, _, _, _ = reg.Join(ctx, "r1", Member{ID: "a", Name: "alice", ClientID: "c2", Expires: refill.Add(time.Hour)}, refill)
			if s.Version < refill.UnixMilli() {
				t.Fatalf("version after refill %d, want at least the clock", s.Version)
			}
		})
	}
}
