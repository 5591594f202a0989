package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// requireBrowser fails the test loudly unless Node.js, the interop npm
// packages (cometd, playwright-core) and Chromium are installed. It returns
// the interop directory and Chromium's path.
func requireBrowser(t *testing.T) (dir, chromium string) {
	t.Helper()
	dir = requireInterop(t)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core")); err != nil {
		t.Fatal("npm playwright-core missing: run scripts/test.sh (it runs npm ci in interop/)")
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return dir, p
		}
	}
	t.Fatal("chromium is not installed: run scripts/test.sh, which installs it (apt-get install chromium)")
	return "", ""
}

// artifactsDir returns an empty directory for this test's screenshots:
// $BAYEUX_ARTIFACTS_DIR/<test name>, by default under tmp/artifacts in the
// repository (ignored by git). It is kept after the test.
func artifactsDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv("BAYEUX_ARTIFACTS_DIR")
	if root == "" {
		root = filepath.Join(testproc.RepoRoot(), "tmp", "artifacts")
	}
	dir := filepath.Join(root, t.Name())
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

var screenshotLine = regexp.MustCompile(`(?m)^\s*screenshot: (.*\.png)$`)

// runBrowserTest runs interop/browser.test.mjs (headless Chromium through
// playwright-core) against the demo served at base, and fails the test
// with its output if any scenario fails.
func runBrowserTest(t *testing.T, base string, nodes int, scenarios string) {
	t.Helper()
	dir, chromium := requireBrowser(t)
	shots := artifactsDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "--test", "--test-reporter=spec", "browser.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"BROWSER_BASE_URL="+base,
		fmt.Sprintf("BROWSER_EXPECT_NODES=%d", nodes),
		"BROWSER_SCENARIOS="+scenarios,
		"BROWSER_SCREENSHOTS="+shots,
		"CHROMIUM="+chromium,
	)
	// Its own process group, so that a timeout also ends Chromium.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("browser test failed after %v: %v\n%s", time.Since(start).Round(time.Millisecond), err, out)
	}
	t.Logf("browser test passed in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	paths := screenshotLine.FindAllStringSubmatch(string(out), -1)
	if len(paths) == 0 {
		t.Fatal("the browser test saved no screenshot")
	}
	var list []string
	for _, m := range paths {
		if _, err := os.Stat(m[1]); err != nil {
			t.Errorf("screenshot %s: %v", m[1], err)
		}
		list = append(list, m[1])
	}
	t.Logf("screenshots:\n  %s", strings.Join(list, "\n  "))
}

// TestBrowserDemoCluster drives the demo pages in headless Chromium through
// a round-robin balancer in front of three nodes: two browsers chat over
// websocket, over long-polling (WebSocket removed from the browser) and
// over callback-polling, then the CometD JavaScript client chats with ours;
// each time both see each other in the member list, both see the same
// messages in the same order, markup stays text, and a page that goes away
// leaves the list. The cluster page must list the three nodes.
func TestBrowserDemoCluster(t *testing.T) {
	start := time.Now()
	c := testproc.StartCluster(t, 3)
	t.Logf("3 nodes up and converged in %v", time.Since(start).Round(time.Millisecond))
	runBrowserTest(t, c.Balancer.URL, 3, "websocket,long-polling,callback-polling,cometd,cluster")
}

// TestBrowserDemoSingleNode checks the demo on one node with the in-memory
// engine, started as the README starts it.
func TestBrowserDemoSingleNode(t *testing.T) {
	n := testproc.StartNode(t, nil)
	runBrowserTest(t, n.Base, 1, "websocket,cluster")
}
