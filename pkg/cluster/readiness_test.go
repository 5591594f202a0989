package cluster

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
)

// TestReadinessDuringRedisOutage: the node stays ready through a Redis
// outage and says so; once Redis answers again the detail is healthy
// within 2s, on an engine with no subscribed channel (no subscription
// confirmation will come to tell it).
func TestReadinessDuringRedisOutage(t *testing.T) {
	rd := testproc.StartRedis(t)
	e := newEngine(t, rd.URL(), nil)
	run(t, e)
	r := NewReadiness(func() bool { return false }, e)
	if ok, d := r.Check(); ok || !strings.Contains(d, "starting") {
		t.Fatalf("before Started: %v %q", ok, d)
	}
	r.Started()
	waitFor(t, 5*time.Second, "ready", func() bool { ok, d := r.Check(); return ok && d == "ready" })
	rd.Kill()
	waitFor(t, 5*time.Second, "the outage reported", func() bool {
		ok, d := r.Check()
		return ok && strings.Contains(d, "ready (degraded): backplane unavailable")
	})
	waitFor(t, 5*time.Second, "the pub/sub reader to notice", func() bool { return !e.Ready() })
	rd.StartAgain(t)
	back := time.Now()
	waitFor(t, 5*time.Second, "the backplane reported up", func() bool {
		ok, d := r.Check()
		return ok && !strings.Contains(d, "backplane unavailable")
	})
	if took := time.Since(back); took > 2*time.Second {
		t.Fatalf("backplane reported up %v after Redis answered, want within 2s", took)
	}
	// The pub/sub reader holds no channel: it recovers on a PING, without
	// waiting for a subscription confirmation that will not come.
	waitFor(t, 3*time.Second, "ready again", func() bool { ok, d := r.Check(); return ok && d == "ready" })
}

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestJoinedNobodyNotReady: a node given seeds of which none answers (one
// does not even resolve) is not ready, says why, and warns at WARN.
func TestJoinedNobodyNotReady(t *testing.T) {
	logs := &syncBuf{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	id := "lonely-" + t.Name()
	m, err := NewMembership(MembershipConfig{
		Self:   Meta{ID: id, Tag: NodeTag(id), GRPC: "127.0.0.1:1", Proto: ProtocolVersion},
		Listen: "127.0.0.1:0", Fast: true, Logger: log,
		Join: []string{"127.0.0.1:1", "no-such-seed.invalid:7946"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Leave(100 * time.Millisecond) }()
	r := NewReadiness(func() bool { return false }, nil)
	r.SetCluster(&Cluster{mem: m})
	r.Started()
	if ok, d := r.Check(); ok || !strings.Contains(d, "joining") {
		t.Fatalf("before joining: %v %q, want not ready", ok, d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Join(ctx) }()
	waitFor(t, 10*time.Second, "the WARN lines", func() bool {
		s := logs.String()
		return strings.Contains(s, "level=WARN msg=\"gossip seed does not resolve\" seed=no-such-seed.invalid:7946") &&
			strings.Contains(s, "level=WARN msg=\"not joined to any node; not ready until a seed answers\"")
	})
	ok, d := r.Check()
	cancel()
	<-done
	if ok || !strings.Contains(d, "not ready: joined nobody") {
		t.Fatalf("readiness %v %q, want not ready: joined nobody", ok, d)
	}
	if n := strings.Count(logs.String(), "not joined to any node"); n != 1 {
		t.Fatalf("%d WARN lines within the first seconds, want 1 (bounded rate)", n)
	}
}

// TestPeerConnectionClosedWhenPeerDeparts: the gRPC connection to a peer
// is closed once the peer leaves the membership.
func TestPeerConnectionClosedWhenPeerDeparts(t *testing.T) {
	a := startInprocNode(t, "a", "", nil)
	faults := &GossipFaults{}
	b := startInprocNode(t, "b", a.c.GossipAddr(), func(c *Config) { c.GossipFaults = faults })
	waitFor(t, 5*time.Second, "two members", func() bool { return len(a.c.Members()) == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.c.SessionOp(ctx, b.c.Tag(), b.c.Tag()+"x", "disconnect"); err != nil {
		t.Logf("session op: %v", err) // the connection exists either way
	}
	if n := a.c.peers.open(); n != 1 {
		t.Fatalf("%d peer connections, want 1", n)
	}
	a.c.peers.mu.Lock()
	var cc *grpc.ClientConn
	for _, pc := range a.c.peers.conns {
		cc = pc.cc
	}
	a.c.peers.mu.Unlock()
	faults.Isolate()
	waitFor(t, 10*time.Second, "b to be seen failed", func() bool { return len(a.c.Members()) == 1 })
	waitFor(t, 2*time.Second, "the connection to b closed", func() bool {
		return a.c.peers.open() == 0 && cc.GetState() == connectivity.Shutdown
	})
	faults.Restore()
}

// TestStartInstallsRouterBeforeServing: a peer's request that reaches the
// gRPC port the moment it accepts finds the router and store installed
// (under -race, a request served before SetCluster is a reported race).
func TestStartInstallsRouterBeforeServing(t *testing.T) {
	for i := range 10 {
		port := testproc.FreePort(t)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		stop := make(chan struct{})
		hammered := make(chan struct{})
		go func() {
			defer close(hammered)
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = process(t, addr, insecure.NewCredentials())
			}
		}()
		id := fmt.Sprintf("early-%d-%s", i, t.Name())
		b, err := broker.New(broker.Config{IDPrefix: NodeTag(id), Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		c, err := Start(ctx, Config{NodeID: id, GossipListen: "127.0.0.1:0", GRPCListen: addr, FastGossip: true, Logger: quiet}, b)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		_ = process(t, addr, insecure.NewCredentials()) // at least one after Start
		close(stop)
		<-hammered
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		c.Stop(sctx)
		scancel()
		cancel()
	}
}
