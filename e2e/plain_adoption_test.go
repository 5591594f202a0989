package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
	"github.com/bayeux-cluster/bayeux/pkg/client"
)

// TestPlainAdoption: a plain session (no ack, no replay extension) keeps
// no positions in its record, so the node that adopts it after its owner
// failed cannot know what was published meanwhile: its first connect
// there is answered 410 with handshake advice (never a silent gap), and
// the unchanged Go client re-handshakes by itself and receives again. A
// session handed over by a drain has exact positions: it resumes with the
// same clientId and gets what was published during the hand-over.
//
// Two subscribers per case, both owned by the node the fault hits: a raw
// long-polling peer that talks to one surviving node directly (the exact
// reply), and the Go client through the balancer (the behaviour).
func TestPlainAdoption(t *testing.T) {
	tests := []struct {
		name  string
		fault func(t *testing.T, c *testproc.Cluster, victim *testproc.Node)
		told  bool // the session ends with 410 on the adopter
	}{
		{"kill9", func(t *testing.T, c *testproc.Cluster, victim *testproc.Node) {
			if err := victim.Cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			if _, exited := victim.Wait(5 * time.Second); !exited {
				t.Fatal("killed node did not exit")
			}
		}, true},
		{"sigterm", func(t *testing.T, c *testproc.Cluster, victim *testproc.Node) {
			if err := victim.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err, exited := victim.Wait(15 * time.Second); !exited || err != nil {
				t.Fatalf("drained node: exited=%v err=%v", exited, err)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testproc.StartCluster(t, 3, "--timeout", "5s") // a raw connect is held at most 5s
			victim, survivor := c.Nodes[1], c.Nodes[0]
			ch := "/plain/" + tt.name
			pub := &bayeuxtest.Peer{T: t, URL: c.Nodes[2].URL}
			pubID := pub.Handshake(nil)
			publish := func(n int) { pub.MustSucceed(bayeuxtest.Msg{"channel": ch, "clientId": pubID, "data": n}) }

			raw := &bayeuxtest.Peer{T: t, URL: victim.URL}
			id := raw.Handshake(nil)
			raw.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": ch})
			gc := newPlainGoSubscriber(t, c, victim.Tag, ch)

			publish(1)
			if d, r := plainConnect(raw, id); r["successful"] != true || !slicesEqualData(d, 1) {
				t.Fatalf("connect before the fault: %v, deliveries %v", r, d)
			}
			gc.await(t, 1)

			tt.fault(t, c, victim)
			publish(2) // before any node adopted the sessions

			// The raw peer's next connect, on a survivor: 503 (retry)
			// until the adoption may happen, then the answer.
			raw.URL = survivor.URL
			var d []bayeuxtest.Msg
			var r bayeuxtest.Msg
			bayeuxtest.Eventually(t, 20*time.Second, func() error {
				// A connect forwarded to the dead owner before its
				// failure is known loses its reply (plain HTTP 503).
				all, err := raw.TryConnect(id, nil)
				if err != nil {
					return err
				}
				ds, rs := bayeuxtest.Split(all)
				if len(rs) != 1 {
					return fmt.Errorf("connect replies: %v", rs)
				}
				d, r = ds, rs[0]
				if e, _ := r["error"].(string); strings.HasPrefix(e, "503:") {
					return fmt.Errorf("connect on the survivor: %v", r)
				}
				return nil
			})
			adv, _ := r["advice"].(map[string]any)
			if tt.told {
				if e, _ := r["error"].(string); r["successful"] != false || !strings.HasPrefix(e, "410:") || adv["reconnect"] != "handshake" || len(d) != 0 {
					t.Fatalf("first connect on the adopter: %v, deliveries %v; want 410 with handshake advice", r, d)
				}
			} else if r["successful"] != true || r["clientId"] != id || !slicesEqualData(d, 2) {
				t.Fatalf("first connect on the adopter after a drain: %v, deliveries %v; want [2], same clientId", r, d)
			}

			// The Go client: told, it re-handshakes and receives again;
			// drained, it keeps its session and misses nothing.
			next := gc.receivesAgain(t, publish, 3)
			hs, kept := gc.c.Handshakes(), gc.c.ClientID() == gc.first
			// (More than one re-handshake when its resubscription hit the
			// dead node, which the balancer keeps: the client starts over.)
			if tt.told && (hs < 2 || kept) {
				t.Fatalf("Go client: %d handshakes, clientId kept %v; want a re-handshake", hs, kept)
			}
			if !tt.told {
				if hs != 1 || !kept {
					t.Fatalf("Go client: %d handshakes, clientId kept %v; want its session kept", hs, kept)
				}
				if got := gc.received(); len(got) < 3 || !slices.Equal(got[:3], []int{1, 2, 3}) {
					t.Fatalf("Go client after a drain received %v, want 1, 2, 3, ...", got)
				}
			}
			t.Logf("%s: raw peer's first connect on the adopter %v; Go client handshakes=%d, receiving again from %d", tt.name, r, hs, next)
		})
	}
}

// plainConnect sends one long-polling /meta/connect (held at most the
// cluster's --timeout, 5s) and returns its deliveries and its one reply.
func plainConnect(p *bayeuxtest.Peer, id string) ([]bayeuxtest.Msg, bayeuxtest.Msg) {
	d, r := bayeuxtest.Split(p.Connect(id, nil))
	if len(r) != 1 {
		p.T.Fatalf("connect replies: %v", r)
	}
	return d, r[0]
}

// slicesEqualData reports whether ds are deliveries of exactly the
// numbers ns.
func slicesEqualData(ds []bayeuxtest.Msg, ns ...int) bool {
	got := make([]int, 0, len(ds))
	for _, d := range ds {
		f, _ := d["data"].(float64)
		got = append(got, int(f))
	}
	return slices.Equal(got, ns)
}

// plainGoSubscriber is the Go client without ack or replay, subscribed to
// one channel of numbers.
type plainGoSubscriber struct {
	c     *client.Client
	first string

	mu  sync.Mutex
	got []int
}

func newPlainGoSubscriber(t *testing.T, c *testproc.Cluster, owner, ch string) *plainGoSubscriber {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := client.Config{URL: c.URL(), Transports: []string{protocol.LongPolling}, DisableAck: true,
		BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second, Logger: quietLog}
	gc, err := dialOwnedBy(ctx, cfg, owner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = gc.Close(ctx)
	})
	s := &plainGoSubscriber{c: gc, first: gc.ClientID()}
	if _, err := gc.Subscribe(ctx, ch, func(m *client.Message) {
		var n int
		if json.Unmarshal(m.Data, &n) == nil {
			s.mu.Lock()
			s.got = append(s.got, n)
			s.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *plainGoSubscriber) received() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.got...)
}

func (s *plainGoSubscriber) await(t *testing.T, n int) {
	t.Helper()
	bayeuxtest.Eventually(t, 10*time.Second, func() error {
		for _, v := range s.received() {
			if v == n {
				return nil
			}
		}
		return fmt.Errorf("Go client has %v, waits for %d", s.received(), n)
	})
}

// receivesAgain publishes from, from+1, ... (one every 200ms) until the
// client receives one, and returns the first number it received.
func (s *plainGoSubscriber) receivesAgain(t *testing.T, publish func(int), from int) int {
	t.Helper()
	var got int
	n := from
	deadline := time.Now().Add(30 * time.Second)
	for got == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Go client receives nothing after the fault (has %v, err %v)", s.received(), s.c.Err())
		}
		publish(n)
		n++
		wait := time.Now().Add(200 * time.Millisecond)
		for got == 0 && time.Now().Before(wait) {
			for _, v := range s.received() {
				if v >= from {
					got = v
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := s.c.Err(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Go client stopped: %v", err)
	}
	return got
}
