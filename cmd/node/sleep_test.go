package main

import (
	"os/exec"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// TestSleepSubcommand: "node sleep D" (the Kubernetes preStop hook of the
// distroless image) waits D and exits 0; a bad duration exits 2.
func TestSleepSubcommand(t *testing.T) {
	bin := testproc.NodeBinary(t)
	for _, tc := range []struct {
		arg  string
		code int
		min  time.Duration
	}{
		{"300ms", 0, 300 * time.Millisecond},
		{"0s", 0, 0},
		{"soon", 2, 0},
		{"-1s", 2, 0},
		{"1h", 2, 0},
	} {
		start := time.Now()
		err := exec.Command(bin, "sleep", tc.arg).Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code || time.Since(start) < tc.min {
			t.Errorf("node sleep %s: exit %d after %v, want exit %d after at least %v", tc.arg, code, time.Since(start), tc.code, tc.min)
		}
	}
}
