package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/serverapi"
)

// TestServerAPICost measures what presence and channel lists cost the
// Redis backplane (the figures of docs/architecture.md, "Server API"):
// Redis commands per /meta/subscribe (the broker's own work; the API adds
// nothing) and per presence and channels query (none: each node answers
// from memory over node-to-node gRPC), with 1 and 3 nodes. Counts are
// INFO commandstats deltas, INFO and PING excluded; nodes run with
// --demo=false and --max-interval 120s so nothing else writes meanwhile.
func TestServerAPICost(t *testing.T) {
	const subs, queries = 30, 20
	for _, nodes := range []int{1, 3} {
		t.Run(fmt.Sprintf("nodes=%d", nodes), func(t *testing.T) {
			keyFile := filepath.Join(t.TempDir(), "keys")
			if err := os.WriteFile(keyFile, []byte(apiKey1+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			r := testproc.StartRedis(t)
			c := testproc.StartClusterOn(t, r, nodes, "--api-key-file", keyFile, "--demo=false", "--max-interval", "120s", "--lease-ttl", "1h")
			rc := redis.NewClient(&redis.Options{Addr: r.Addr})
			defer rc.Close()
			ctx := context.Background()
			api := serverapi.NewClient(c.Nodes[0].API, apiKey1, &http.Client{Timeout: 20 * time.Second})

			var peers []*bayeuxtest.Peer
			var ids []string
			for i := range subs {
				p := &bayeuxtest.Peer{T: t, URL: c.Nodes[i%nodes].URL}
				peers = append(peers, p)
				ids = append(ids, p.Handshake(nil))
			}
			measure := func(f func()) int64 {
				before := commandStats(t, ctx, rc)
				f()
				after := commandStats(t, ctx, rc)
				var n int64
				by := map[string]int64{}
				for cmd, calls := range after {
					if d := calls - before[cmd]; cmd != "info" && cmd != "ping" && d > 0 {
						n += d
						by[cmd] = d
					}
				}
				t.Logf("commands: %v", by)
				return n
			}
			// First subscriber of a channel on its node, then a second
			// session of the same node on a channel the node already has.
			fresh := measure(func() {
				for i, p := range peers {
					p.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": ids[i], "subscription": fmt.Sprintf("/cost/c%d", i)})
				}
			})
			shared := measure(func() {
				for i, p := range peers {
					p.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": ids[i], "subscription": fmt.Sprintf("/cost/c%d", (i+nodes)%subs)})
				}
			})
			var pres serverapi.PresenceResult
			presence := measure(func() {
				for range queries {
					var err error
					if pres, err = api.Presence(ctx, "/cost/c0"); err != nil {
						t.Fatal(err)
					}
				}
			})
			channels := measure(func() {
				for range queries {
					if _, err := api.Channels(ctx, "/cost/**"); err != nil {
						t.Fatal(err)
					}
				}
			})
			if len(pres.Sessions) != 2 {
				t.Errorf("presence of /cost/c0: %v", pres.Sessions)
			}
			t.Logf("nodes=%d: Redis commands per subscribe: %.2f (first on its node), %.2f (channel already in use on the node); per presence query: %.2f; per channels query: %.2f",
				nodes, float64(fresh)/subs, float64(shared)/subs, float64(presence)/queries, float64(channels)/queries)
			if presence != 0 || channels != 0 {
				t.Errorf("presence and channel queries cost Redis %d and %d commands, want none", presence, channels)
			}
		})
	}
}
