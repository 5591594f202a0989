package e2e

import (
	"testing"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// backplane is a Redis deployment the cluster tests run on.
type backplane struct {
	name  string
	start func(t *testing.T, n int, extra ...string) *testproc.Cluster
}

// backplanes are the deployments the cluster suite runs on: one Redis
// instance (classic pub/sub), and a three-master Redis Cluster (sharded
// pub/sub, the default 64 partitions spread over the shards).
var backplanes = []backplane{
	{"redis", func(t *testing.T, n int, extra ...string) *testproc.Cluster {
		t.Helper()
		return testproc.StartCluster(t, n, extra...)
	}},
	{"redis-cluster", startOnRedisCluster},
}

func startOnRedisCluster(t *testing.T, n int, extra ...string) *testproc.Cluster {
	t.Helper()
	rc := testproc.StartRedisCluster(t, 3, 0)
	return testproc.StartClusterOnURL(t, rc.URL(), n, extra...)
}

// forEachBackplane runs f as a subtest per backplane.
func forEachBackplane(t *testing.T, f func(t *testing.T, start func(t *testing.T, n int, extra ...string) *testproc.Cluster)) {
	for _, bp := range backplanes {
		t.Run(bp.name, func(t *testing.T) { f(t, bp.start) })
	}
}
