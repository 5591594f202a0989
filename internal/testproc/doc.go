// Package testproc runs real broker node processes for tests: it builds
// cmd/node once per test binary, starts nodes on random loopback ports,
// reads the URL each prints, and stops every process it started (by PID)
// when the test ends. Safe for concurrent use by parallel tests.
package testproc
