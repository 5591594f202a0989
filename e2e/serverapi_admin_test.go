package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
)

// TestServerAPIAdminConsole drives the admin console of node 0 in headless
// Chromium (interop/admin.test.mjs) with a session owned by node 1: the
// console lists the three nodes, the channel and the session, shows the
// history, publishes (the session receives it; the console sees it live
// over Bayeux) and disconnects the session. Then, as a new user would, a
// demo tab opened through the balancer gets a publish made through the
// API, shows in presence, and handshakes again when disconnected.
func TestServerAPIAdminConsole(t *testing.T) {
	dir, chromium := requireBrowser(t)
	c, _, clients := apiCluster(t)
	ch := "/admin/watched"
	sub := newRawSubscriber(t, c.Nodes[1].URL, "long-polling", ch)
	if _, err := clients[2].Publish(context.Background(), ch, json.RawMessage(`"seed"`)); err != nil {
		t.Fatal(err)
	}
	waitReceived(t, []*rawSubscriber{sub}, 1, 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "--test", "--test-reporter=spec", "admin.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "ADMIN_URL="+c.Nodes[0].API, "ADMIN_KEY="+apiKey1, "ADMIN_CHANNEL="+ch,
		"ADMIN_CLIENT_ID="+sub.id, "ADMIN_EXPECT_NODES=3", "DEMO_URL="+c.Balancer.URL, "ADMIN_SCREENSHOTS="+artifactsDir(t), "CHROMIUM="+chromium)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a timeout also ends Chromium
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("admin console test failed: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	bayeuxtest.Eventually(t, 10*time.Second, func() error {
		got, stop := sub.received()
		if !slices.Contains(got, `{"from":"admin"}`) || !strings.Contains(stop, "402") {
			return fmt.Errorf("subscriber of node 1: got %v, stopped with %q", got, stop)
		}
		return nil
	})
	if !strings.Contains(c.Nodes[0].Log.String(), "server API: disconnect") {
		t.Error("no audit line for the console's disconnect")
	}
}
