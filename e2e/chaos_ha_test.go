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

// TestChaosSentinelFailover is the chaos suite's Redis high-availability
// scenario (issue 16): a primary with one replica behind three sentinels
// (all real redis-server processes), three nodes on
// redis+sentinel://... with --redis-wait-replicas 1, the harness's
// publishers and subscribers through the balancer. The primary is killed
// (SIGKILL) under load; the sentinels promote the replica; the old primary
// comes back empty, as the new primary's replica (Sentinel.RestartAsReplica
// says why it must not come back as a primary). Publishes are
// refused (503) while fewer than one replica confirms them, never
// acknowledged and lost: the figures line must show lost=0, duplicated=0
// and at least 99% of clientIds kept, and every publish must get an
// answer (acknowledged or refused) within answeredOptions' timeout.
func TestChaosSentinelFailover(t *testing.T) {
	start := time.Now()
	s := testproc.StartSentinel(t, 1)
	c := testproc.StartClusterOnURL(t, s.URL(), 3, append(chaosNodeArgs, "--redis-wait-replicas", "1")...)
	r := startChaosWith(t, "sentinel-failover", c, answeredOptions)
	faultStart := time.Now()
	if err := sentinelFailover(t, s, c); err != nil {
		t.Errorf("recovery from the failover: %v", err)
	}
	t.Logf("fault and recovery took %v", time.Since(faultStart).Round(time.Millisecond))
	if err := r.flowing(50, 20*time.Second); err != nil {
		t.Errorf("traffic after the failover: %v", err)
	}
	r.finish(20*time.Second, true)
	r.checkAnswered(answeredOptions.publishTimeout)
	t.Logf("scenario took %v", time.Since(start).Round(time.Millisecond))
}

// sentinelFailover kills the primary, waits for the sentinels to promote
// the replica and for the old primary to rejoin as its replica, then for
// every node to report its backplane up.
func sentinelFailover(t *testing.T, s *testproc.Sentinel, c *testproc.Cluster) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	old, err := s.Primary(ctx)
	if err != nil {
		return err
	}
	killed := time.Now()
	s.Server(old).Kill()
	promoted, err := s.AwaitFailover(ctx, old)
	if err != nil {
		return err
	}
	t.Logf("sentinels promoted %s %v after the primary %s was killed", promoted, time.Since(killed).Round(time.Millisecond), old)
	if err := s.RestartAsReplica(ctx, t, old); err != nil {
		return err
	}
	if err := s.AwaitReplicas(ctx, 1); err != nil {
		return fmt.Errorf("old primary back as a replica: %w", err)
	}
	t.Logf("old primary in sync as a replica %v after the kill", time.Since(killed).Round(time.Millisecond))
	return backplaneAll(c.Nodes, false, 10*time.Second)
}

// TestChaosRollingRestart replaces every node of a three-node cluster in
// turn under the harness's load, as a deployment rollout does
// (chaosRollingRestart). It asserts what every chaos scenario asserts
// (lost=0, duplicated=0, >= 99% of clientIds kept), that every publish is
// answered (acknowledged or refused), and that each draining
// node exits well within its shutdown grace, without a request left stuck
// until the grace cut it.
func TestChaosRollingRestart(t *testing.T) {
	start := time.Now()
	env := &chaosEnv{c: testproc.StartClusterOn(t, testproc.StartRedisDurable(t), 3, chaosNodeArgs...)}
	r := startChaosWith(t, "rolling-restart", env.c, answeredOptions)
	if err := chaosRollingRestart(t, env, r); err != nil {
		t.Errorf("rolling restart: %v", err)
	}
	r.finish(20*time.Second, true)
	r.checkAnswered(answeredOptions.publishTimeout)
	t.Logf("scenario took %v", time.Since(start).Round(time.Millisecond))
}

// chaosRollingRestart replaces each node of the cluster in turn: a new
// node joins, the balancer is reloaded to send new connections to the new
// set, and the old node gets SIGTERM and drains; it must exit well within
// its shutdown grace (5s): within 3s. Traffic must flow again after each
// step.
func chaosRollingRestart(t *testing.T, env *chaosEnv, r *chaosRun) error {
	const wellWithinGrace = 3 * time.Second
	c := env.c
	for i := range len(c.Nodes) {
		old := c.Nodes[0]
		fresh := c.StartNode(t, chaosNodeArgs...)
		c.Nodes = append(c.Nodes[1:], fresh)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := c.AwaitMembers(ctx, 4)
		cancel()
		if err != nil {
			return fmt.Errorf("step %d: new node did not join: %w", i, err)
		}
		var backends []string
		for _, n := range c.Nodes {
			backends = append(backends, strings.TrimPrefix(n.Base, "http://"))
		}
		c.Balancer.SetBackends(t, backends)
		term := time.Now()
		if err := old.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		err, exited := old.Wait(15 * time.Second)
		took := time.Since(term)
		if !exited {
			return fmt.Errorf("step %d: draining node did not exit within 15s", i)
		}
		t.Logf("step %d: node %s drained and exited in %v (exit: %v)", i, old.Tag, took.Round(time.Millisecond), err)
		if err != nil {
			t.Errorf("step %d: draining node exited with %v", i, err)
		}
		if took > wellWithinGrace {
			t.Errorf("step %d: draining node took %v, want within %v (grace 5s); its log from SIGTERM on:\n%s", i, took.Round(time.Millisecond), wellWithinGrace, drainLog(old.Log.String()))
		}
		if bad := drainTrouble(old.Log.String()); len(bad) > 0 {
			t.Errorf("step %d: the draining node logged what a clean drain does not:\n%s", i, strings.Join(bad, "\n"))
		}
		ctx, cancel = context.WithTimeout(context.Background(), 15*time.Second)
		err = c.AwaitMembers(ctx, 3)
		cancel()
		if err != nil {
			return fmt.Errorf("step %d: membership after the drain: %w", i, err)
		}
		if err := r.flowing(50, 15*time.Second); err != nil {
			t.Errorf("step %d: traffic after the drain: %v", i, err)
		}
	}
	return nil
}

// drainTrouble returns the log lines of a drained node that show requests
// left stuck until the shutdown grace cut them: a context cancelled under
// a request, or a shutdown step that did not complete.
func drainTrouble(log string) []string {
	var bad []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "context canceled") || strings.Contains(line, "shutdown incomplete") {
			bad = append(bad, line)
		}
	}
	return bad
}

// drainLog returns a node's log from its "shutting down" line on.
func drainLog(log string) string {
	if i := strings.Index(log, "shutting down"); i >= 0 {
		if j := strings.LastIndex(log[:i], "\n"); j >= 0 {
			return log[j+1:]
		}
	}
	return log
}
