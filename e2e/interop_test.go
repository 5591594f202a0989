package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// requireInterop fails the test loudly unless node and the interop suite's
// npm packages are installed.
func requireInterop(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(testproc.RepoRoot(), "interop")
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node (Node.js) is not installed: run scripts/test.sh, which installs what the tests need")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "cometd")); err != nil {
		t.Fatal("interop npm packages missing: run scripts/test.sh (it runs npm ci in interop/)")
	}
	return dir
}

// runInterop runs the interop suite (optionally only some files) against
// url/debugURL and fails the test with its output if any scenario fails.
func runInterop(t *testing.T, url, debugURL string, files ...string) string {
	t.Helper()
	dir := requireInterop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{"run.sh"}, files...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BAYEUX_URL="+url, "BAYEUX_DEBUG_URL="+debugURL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("interop suite failed: %v\n%s", err, out)
	}
	return string(out)
}

// TestInteropSingleNode runs every scenario of the interop suite with the
// CometD client on long-polling, callback-polling and websocket and the
// Faye client on long-polling and websocket, against one node started as a
// user would start it.
func TestInteropSingleNode(t *testing.T) {
	n := testproc.StartNode(t, nil, "--debug-api")
	out := runInterop(t, n.URL, n.Base+"/debug/bayeux")
	t.Logf("interop summary:\n%s", interopSummary(out))
}

// interopSummary keeps the suite's per client/transport summary lines.
func interopSummary(out string) string {
	summary := ""
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "passed") && strings.Contains(line, "failed") {
			summary += line + "\n"
		}
	}
	return summary
}
