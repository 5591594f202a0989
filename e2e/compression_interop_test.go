package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// TestInteropCompression runs interop/compression.mjs: the CometD client
// (npm ws), Faye (with npm permessage-deflate) and Chromium each negotiate
// permessage-deflate with a node started with its defaults, and publish
// and receive a 6 KB message over the compressed websocket; with
// --ws-compression=false none of them gets it, and they still work.
func TestInteropCompression(t *testing.T) {
	dir, chromium := requireBrowser(t)
	for _, tc := range []struct {
		name   string
		args   []string
		expect string
	}{
		{"on", nil, "1"},
		{"off", []string{"--ws-compression=false"}, "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := testproc.StartNode(t, nil, append([]string{"--demo=false"}, tc.args...)...)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "node", "compression.mjs")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "BAYEUX_URL="+n.URL, "CHROMIUM="+chromium, "EXPECT_COMPRESSION="+tc.expect)
			// Its own process group, so that a timeout also ends Chromium.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
			cmd.WaitDelay = 5 * time.Second
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("compression interop failed: %v\n%s", err, out)
			}
			if got := strings.Count(string(out), " ok\n"); got != 3 {
				t.Fatalf("want 3 clients ok, got %d:\n%s", got, out)
			}
			t.Logf("\n%s", out)
		})
	}
}
