package e2e

import (
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// TestClusterInteropThroughBalancer runs the whole interop suite (CometD on
// three transports, Faye on two) through a round-robin balancer with no
// stickiness in front of three nodes, on each backplane (one Redis, a
// Redis Cluster).
func TestClusterInteropThroughBalancer(t *testing.T) {
	forEachBackplane(t, func(t *testing.T, startCluster func(t *testing.T, n int, extra ...string) *testproc.Cluster) {
		start := time.Now()
		c := startCluster(t, 3)
		t.Logf("3 nodes up and converged in %v", time.Since(start).Round(time.Millisecond))
		out := runInterop(t, c.URL(), c.Balancer.URL+"/debug/bayeux")
		t.Logf("interop through the balancer:\n%s", interopSummary(out))
	})
}
