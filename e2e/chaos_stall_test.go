package e2e

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// stallFor is how long a stall scenario lasts: well beyond failure
// detection plus the adoption delay (about 2-3 s with the tests' fast
// gossip timers), so the other nodes adopt the stalled node's sessions
// while it cannot act.
const stallFor = 15 * time.Second

// stallOptions: a publish held up by the stalled node waits for its
// answer (acknowledgement or refusal) after the stall ends; a subscriber
// gives up on a connect 2 s past the server's timeout (10 s), within the
// stall, and connects again, so that some reach the other nodes, which
// adopt their sessions while the stalled node cannot act.
var stallOptions = chaosOptions{publishTimeout: 2*stallFor + 10*time.Second, timeoutMargin: 2 * time.Second}

// TestChaosStall is the chaos suite's stall scenarios (issue 16): node 1
// stops acting for 15 s while the others go on, then comes back.
//
//   - freeze: SIGSTOP, then SIGCONT (a VM stall, a long GC pause). The
//     node keeps its sockets, so the balancer still hands it requests,
//     which wait; its lease lapses and its sessions are adopted.
//   - partition: the node is cut off gossip (it keeps Redis, its clients
//     and gRPC): its peers see it dead, but its lease is still held, so
//     nobody adopts its sessions; requests for them through the peers
//     get 503 with retry advice until the partition heals.
//
// Each asserts what every chaos scenario asserts (lost=0, duplicated=0),
// at least 99% of clientIds kept, and that every publish was eventually
// acknowledged or refused (none left unanswered within
// stallPublishTimeout).
func TestChaosStall(t *testing.T) {
	for _, sc := range []struct {
		name  string
		fault func(t *testing.T, c *testproc.Cluster) error
		// adopts: the others adopt some of node 1's sessions (its lease
		// lapses); otherwise none (its lease is held throughout).
		adopts bool
	}{
		{"freeze", stallFreeze, true},
		{"partition", stallPartition, false},
	} {
		t.Run(sc.name, func(t *testing.T) {
			start := time.Now()
			// With the websocket hand-over on: a resumed node must not
			// pull back, through its old websockets, sessions adopted
			// while it was frozen (docs/architecture.md §12).
			c := testproc.StartClusterOn(t, testproc.StartRedisDurable(t), 3, append([]string{"--handover-hold", "2s"}, chaosNodeArgs...)...)
			r := startChaosWith(t, "stall-"+sc.name, c, stallOptions)
			faultStart := time.Now()
			if err := sc.fault(t, c); err != nil {
				t.Errorf("recovery from the fault: %v", err)
			}
			t.Logf("fault and recovery took %v", time.Since(faultStart).Round(time.Millisecond))
			if err := r.flowing(50, 30*time.Second); err != nil {
				t.Errorf("traffic after the fault: %v", err)
			}
			r.finish(30*time.Second, true)
			r.checkAnswered(stallOptions.publishTimeout)
			adopted := 0.0
			for _, n := range []*testproc.Node{c.Nodes[0], c.Nodes[2]} {
				adopted += n.Metrics(t)["bayeux_sessions_adopted_total"]
			}
			lapses := strings.Count(c.Nodes[1].Log.String(), "lease lapsed")
			t.Logf("sessions adopted by the other nodes: %v; lease lapses of the stalled node: %d", adopted, lapses)
			if sc.adopts && (adopted == 0 || lapses == 0) {
				t.Errorf("the stall did not test fencing: %v sessions adopted, %d lease lapses (want both > 0)", adopted, lapses)
			}
			if !sc.adopts && (adopted != 0 || lapses != 0) {
				t.Errorf("%v sessions adopted, %d lease lapses: want none while the node holds its lease", adopted, lapses)
			}
			t.Logf("scenario took %v", time.Since(start).Round(time.Millisecond))
		})
	}
}

// stallFreeze stops node 1 (SIGSTOP) for stallFor, waiting meanwhile for
// the others to see it fail, then resumes it (SIGCONT).
func stallFreeze(t *testing.T, c *testproc.Cluster) error {
	victim := c.Nodes[1]
	if err := victim.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := victim.Signal(syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT: %v", err)
			}
		}
	}
	defer resume()
	others := []*testproc.Node{c.Nodes[0], c.Nodes[2]}
	err := pollUntil(stallFor, func() error {
		for i, n := range others {
			if got, err := membersOf(n); err != nil || got != 2 {
				return fmt.Errorf("node %d sees %d members (%v), want 2", i, got, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("the frozen node was not seen failed: %v", err)
	}
	t.Logf("frozen node seen failed after %v", time.Since(stopped).Round(time.Millisecond))
	time.Sleep(time.Until(stopped.Add(stallFor)))
	resume()
	back := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.AwaitMembers(ctx, 3); err != nil {
		return fmt.Errorf("%w (%v after SIGCONT)", err, time.Since(back).Round(time.Millisecond))
	}
	t.Logf("membership healed %v after SIGCONT", time.Since(back).Round(time.Millisecond))
	return nil
}

// stallPartition cuts node 1 off gossip for stallFor (debug API), its
// HTTP, gRPC and Redis links staying up, then restores it.
func stallPartition(t *testing.T, c *testproc.Cluster) error {
	victim := c.Nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := victim.GossipIsolate(ctx); err != nil {
		t.Fatalf("gossip fault injection unavailable: %v", err)
	}
	isolated := time.Now()
	if err := awaitIsolated(c, victim, stallFor); err != nil {
		t.Errorf("isolation did not take effect: %v", err)
	}
	t.Logf("isolated node seen dead (and seeing the others dead) after %v", time.Since(isolated).Round(time.Millisecond))
	time.Sleep(time.Until(isolated.Add(stallFor)))
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	if err := victim.GossipRestore(rctx); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	actx, acancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer acancel()
	if err := c.AwaitMembers(actx, 3); err != nil {
		return fmt.Errorf("%w (%v after restore)", err, time.Since(restored).Round(time.Millisecond))
	}
	t.Logf("membership healed %v after restore", time.Since(restored).Round(time.Millisecond))
	return nil
}
