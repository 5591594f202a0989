package cluster

import (
	"context"
	"fmt"
	"io"
	"log"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestGossipFaultsIsolateAndRestore: two memberships on loopback, the
// second with fault injection. While it is isolated each sees the other
// dead; once restored, gossip flows again and a join brings them back
// together.
//
// The join is needed: memberlist by itself never contacts a member it
// declared dead once its "dead" broadcasts have run out (within a second
// with fast gossip), so a partition longer than that does not heal until
// someone joins again (see the chaos suite's gossip-isolate scenario).
func TestGossipFaultsIsolateAndRestore(t *testing.T) {
	faults := &GossipFaults{}
	var ms []*Membership
	var metas []Meta
	t.Cleanup(func() {
		for _, m := range ms {
			_ = m.Leave(100 * time.Millisecond)
		}
	})
	join := func(m *Membership) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := m.Join(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i, f := range []*GossipFaults{nil, faults} {
		id := fmt.Sprintf("faulty-%d-%s", i, t.Name())
		meta := Meta{ID: id, Tag: NodeTag(id), GRPC: fmt.Sprintf("127.0.0.1:%d", 9100+i), Proto: ProtocolVersion}
		cfg := MembershipConfig{Self: meta, Listen: "127.0.0.1:0", Fast: true, Logger: quiet, Faults: f}
		if i > 0 {
			cfg.Join = []string{ms[0].Addr()}
		}
		m, err := NewMembership(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ms, metas = append(ms, m), append(metas, meta)
		join(m)
	}
	sees := func(i, j int) bool { _, ok := ms[i].Alive(metas[j].Tag); return ok }
	waitFor(t, 10*time.Second, "both members to see each other", func() bool { return sees(0, 1) && sees(1, 0) })

	faults.Isolate()
	if !faults.Isolated() {
		t.Fatal("Isolated() = false after Isolate")
	}
	start := time.Now()
	waitFor(t, 10*time.Second, "each member to see the other dead", func() bool { return !sees(0, 1) && !sees(1, 0) })
	t.Logf("isolated member seen dead after %v (%d packets dropped or streams refused)", time.Since(start).Round(time.Millisecond), faults.Dropped())
	if faults.Dropped() == 0 {
		t.Fatal("nothing was dropped while isolated")
	}
	for i, m := range ms {
		if _, ok := m.Alive(metas[i].Tag); !ok {
			t.Fatalf("member %d no longer sees itself", i)
		}
	}

	// While isolated, joining fails: every stream is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := ms[1].Join(ctx)
	cancel()
	if err == nil {
		t.Fatal("join succeeded while isolated")
	}
	// A partition that outlasts the dead broadcasts.
	time.Sleep(2 * time.Second)

	faults.Restore()
	start = time.Now()
	join(ms[1])
	waitFor(t, 10*time.Second, "both members to see each other again", func() bool { return sees(0, 1) && sees(1, 0) })
	t.Logf("membership healed %v after restore and join", time.Since(start).Round(time.Millisecond))
}

// TestFaultyTransportShutdownUnread: a faulty transport whose packets
// nobody reads (memberlist failed to start) still shuts down, although
// the inner transport's listener is blocked handing over a packet, and
// Shutdown may be called twice.
func TestFaultyTransportShutdownUnread(t *testing.T) {
	mc := memberlist.DefaultLANConfig()
	mc.BindAddr, mc.BindPort = "127.0.0.1", 0
	mc.Logger = log.New(io.Discard, "", 0)
	ft, err := newFaultyTransport(mc, &GossipFaults{})
	if err != nil {
		t.Fatal(err)
	}
	if mc.BindPort == 0 || mc.AdvertisePort != mc.BindPort || mc.Transport != ft {
		t.Fatalf("config not updated: bind port %d, advertise port %d", mc.BindPort, mc.AdvertisePort)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", mc.BindPort)
	// One packet through the relay proves it works; the next ones are left
	// unread, blocking the relay and the inner transport's listener.
	if _, err := ft.inner.WriteTo([]byte("first"), addr); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-ft.PacketCh():
		if string(p.Buf) != "first" {
			t.Fatalf("relayed %q", p.Buf)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("packet not relayed")
	}
	for range 3 {
		if _, err := ft.inner.WriteTo([]byte("unread"), addr); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- ft.Shutdown() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown blocked")
	}
	if err := ft.Shutdown(); err != nil {
		t.Fatal(err)
	}
}
