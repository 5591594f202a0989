// Package testproc runs real broker node processes for tests: it builds
// cmd/node once per test binary, starts nodes on random loopback ports,
// reads the URL each prints, and stops every process it started (by PID)
// when the test ends. It also runs the backplanes and faults those nodes
// meet: redis-server (single, a Redis Cluster, or a primary with replicas
// behind three sentinels), an nginx balancer, a fault-injecting TCP proxy,
// and reads a process's state and CPU time from /proc/PID/stat.
// Safe for concurrent use by parallel tests.
package testproc
