package e2e

import (
	"context"
	"fmt"
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
// comes back empty and becomes the new primary's replica. Publishes are
// refused (503) while fewer than one replica confirms them, never
// acknowledged and lost: the figures line must show lost=0, duplicated=0
// and at least 99% of clientIds kept.
func TestChaosSentinelFailover(t *testing.T) {
	start := time.Now()
	s := testproc.StartSentinel(t, 1)
	c := testproc.StartClusterOnURL(t, s.URL(), 3, append(chaosNodeArgs, "--redis-wait-replicas", "1")...)
	r := startChaos(t, "sentinel-failover", c)
	faultStart := time.Now()
	if err := sentinelFailover(t, s, c); err != nil {
		t.Errorf("recovery from the failover: %v", err)
	}
	t.Logf("fault and recovery took %v", time.Since(faultStart).Round(time.Millisecond))
	if err := r.flowing(50, 20*time.Second); err != nil {
		t.Errorf("traffic after the failover: %v", err)
	}
	r.finish(20*time.Second, true)
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
	s.Server(old).StartAgain(t)
	if err := s.AwaitReplicas(ctx, 1); err != nil {
		return fmt.Errorf("old primary back as a replica: %w", err)
	}
	t.Logf("old primary in sync as a replica %v after the kill", time.Since(killed).Round(time.Millisecond))
	return backplaneAll(c.Nodes, false, 10*time.Second)
}
