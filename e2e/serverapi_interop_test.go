package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestServerAPIRealClients runs interop/serverapi.test.mjs: unchanged
// CometD and Faye clients (long-polling and websocket) subscribed through
// the balancer in front of three nodes; publishes and broadcasts through
// each node's API reach them in order; presence and channels list them
// from every node; unsubscribe and disconnect (reconnect and not) sent to
// a node that does not own the session take effect and the clients react
// as told.
func TestServerAPIRealClients(t *testing.T) {
	dir := requireInterop(t)
	c, _, _ := apiCluster(t)
	var apis []string
	for _, n := range c.Nodes {
		apis = append(apis, n.API)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "run.sh", "serverapi.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BAYEUX_URL="+c.URL(), "BAYEUX_DEBUG_URL="+c.Balancer.URL+"/debug/bayeux",
		"BAYEUX_API_URLS="+strings.Join(apis, ","), "BAYEUX_API_KEY="+apiKey1)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("serverapi.test.mjs failed: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
