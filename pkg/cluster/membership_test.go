package cluster

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// startMembers starts n fast-gossip memberships on loopback, each joining
// the first, and shuts down those still running when the test ends. leave
// makes member i Leave (memberlist panics on a second Leave).
func startMembers(t *testing.T, n int) (ms []*Membership, metas []Meta, leave func(i int) error) {
	t.Helper()
	left := map[int]bool{}
	leave = func(i int) error {
		left[i] = true
		return ms[i].Leave(time.Second)
	}
	t.Cleanup(func() {
		for i, m := range ms {
			if !left[i] {
				_ = m.Leave(100 * time.Millisecond)
			}
		}
	})
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("member-%d-%s", i, t.Name())
		meta := Meta{ID: id, Tag: NodeTag(id), GRPC: fmt.Sprintf("127.0.0.1:%d", 9000+i), Proto: ProtocolVersion}
		cfg := MembershipConfig{Self: meta, Listen: "127.0.0.1:0", Fast: true, Logger: quiet}
		if i > 0 {
			cfg.Join = []string{ms[0].Addr()}
		}
		m, err := NewMembership(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
		metas = append(metas, meta)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = m.Join(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	return ms, metas, leave
}

// tags returns the sorted tags m sees as live.
func tags(m *Membership) []string {
	var out []string
	for _, meta := range m.Members() {
		out = append(out, meta.Tag)
	}
	slices.Sort(out)
	return out
}

func sortedTags(metas []Meta) []string {
	var out []string
	for _, meta := range metas {
		out = append(out, meta.Tag)
	}
	slices.Sort(out)
	return out
}

func TestMembershipConvergesAndDropsLeaver(t *testing.T) {
	ms, metas, leave := startMembers(t, 3)
	all := sortedTags(metas)
	waitFor(t, 10*time.Second, "every member to see 3 members", func() bool {
		for _, m := range ms {
			if !slices.Equal(tags(m), all) {
				return false
			}
		}
		return true
	})
	for i, m := range ms {
		for _, want := range metas {
			got, ok := m.Alive(want.Tag)
			if !ok || got != want {
				t.Fatalf("member %d: Alive(%s) = %+v, %v; want %+v", i, want.Tag, got, ok, want)
			}
		}
		if got, ok := m.Alive("zzzzzz"); ok {
			t.Fatalf("member %d: Alive of an unknown tag = %+v, want not alive", i, got)
		}
	}

	if err := leave(2); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	ms = ms[:2]
	remaining := sortedTags(metas[:2])
	waitFor(t, 10*time.Second, "the others to drop the member that left", func() bool {
		for _, m := range ms {
			if !slices.Equal(tags(m), remaining) {
				return false
			}
		}
		return true
	})
	for i, m := range ms {
		if got, ok := m.Alive(metas[2].Tag); ok {
			t.Fatalf("member %d still has the member that left: %+v", i, got)
		}
	}
}

// TestJoinSelfOnlyIsJoined: the first pod of a Kubernetes deployment finds
// only itself behind the headless Service (publishNotReadyAddresses): it
// is joined (a cluster of one on purpose), not stuck unready.
func TestJoinSelfOnlyIsJoined(t *testing.T) {
	port := testproc.FreePort(t)
	id := "self-" + t.Name()
	self := fmt.Sprintf("127.0.0.1:%d", port)
	m, err := NewMembership(MembershipConfig{
		Self:   Meta{ID: id, Tag: NodeTag(id), GRPC: "127.0.0.1:1", Proto: ProtocolVersion},
		Listen: self, Fast: true, Logger: quiet, Join: []string{self},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Leave(100 * time.Millisecond) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Join(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, why := m.Joined(); !ok {
		t.Fatalf("not joined: %s", why)
	}
}
