package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// TestForwardedConnectCost measures the server CPU of one long-polling
// /meta/connect that reaches a node which does not own the session, and
// is forwarded to the owner over gRPC (issue 17, item 4), against the
// same connect sent to the owner itself. The connects ask for
// advice.timeout 0 (answered at once), so the figure is the cost of the
// request path, not of holding. CPU is the nodes' utime+stime from
// /proc, summed over both nodes, per connect; the clients run in the test
// process and are not counted.
//
// Asserted: every connect, local or forwarded, succeeds. The figures are
// logged (docs/benchmarks.md records them).
func TestForwardedConnectCost(t *testing.T) {
	c := testproc.StartCluster(t, 2, "--demo=false", "--max-interval", "120s")
	owner, other := c.Nodes[0], c.Nodes[1]
	const sessions, perSession = 20, 150
	ids := make([]string, sessions)
	for i := range ids {
		ids[i] = (&bayeuxtest.Peer{T: t, URL: owner.URL}).Handshake(nil)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: sessions}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	run := func(url string) error {
		errs := make(chan error, sessions)
		var wg sync.WaitGroup
		for _, id := range ids {
			wg.Go(func() {
				body := fmt.Appendf(nil, `[{"channel":"/meta/connect","clientId":%q,"connectionType":"long-polling","advice":{"timeout":0}}]`, id)
				for range perSession {
					if err := connectOnce(client, url, body); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
	// Warm up both paths (connections, gRPC stream, caches).
	for _, url := range []string{owner.URL, other.URL} {
		if err := run(url); err != nil {
			t.Fatal(err)
		}
	}
	measure := func(url string) (perConnect time.Duration, ownerShare float64) {
		o0, n0 := owner.CPU(t), other.CPU(t)
		if err := run(url); err != nil {
			t.Fatal(err)
		}
		o1, n1 := owner.CPU(t), other.CPU(t)
		total := (o1 - o0) + (n1 - n0)
		return total / (sessions * perSession), float64(o1-o0) / float64(max(total, 1))
	}
	local, localOwner := measure(owner.URL)
	fwd, fwdOwner := measure(other.URL)
	t.Logf("server CPU per /meta/connect (%d connects each): at the owner %v (%.0f%% owner); forwarded %v (%.0f%% owner, %.0f%% forwarding node); forwarded / local %.1f×",
		sessions*perSession, local, 100*localOwner, fwd, 100*fwdOwner, 100*(1-fwdOwner), float64(fwd)/float64(local))
}

// connectOnce posts one connect and checks that it succeeded.
func connectOnce(client *http.Client, url string, body []byte) error {
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var out []bayeuxtest.Msg
	if err := json.Unmarshal(raw, &out); err != nil {
		return fmt.Errorf("connect reply %d %q: %w", resp.StatusCode, raw, err)
	}
	for _, m := range out {
		if m["channel"] == "/meta/connect" && m["successful"] == true {
			return nil
		}
	}
	return fmt.Errorf("connect failed: %s", raw)
}
