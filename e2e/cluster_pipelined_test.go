package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// TestClusterPipelinedPublishes: one websocket client sends publishes
// frame after frame without waiting for their replies, through a node of
// a three-node cluster, and one long-polling client posts a batch of
// publishes: the node keeps them in flight together (one Redis pipeline),
// yet every reply comes back successful and in order, and a subscriber on
// another node receives every message once, in order.
func TestClusterPipelinedPublishes(t *testing.T) {
	forEachBackplane(t, func(t *testing.T, start func(t *testing.T, n int, extra ...string) *testproc.Cluster) {
		c := start(t, 3)
		const frames, batch = 1000, 100
		ch := "/pipelined/one"
		sub := newRawSubscriber(t, c.Nodes[1].URL, "websocket", ch)

		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(c.Nodes[0].URL, "http"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		ws.SetReadLimit(64 << 20)
		id := wsHandshake(ctx, t, ws)
		replies := make(chan msg, frames)
		go func() {
			defer close(replies)
			for {
				_, data, err := ws.Read(ctx)
				if err != nil {
					return
				}
				var ms []msg
				if json.Unmarshal(data, &ms) != nil {
					return
				}
				for _, m := range ms {
					if m["channel"] == ch {
						replies <- m
					}
				}
			}
		}()
		for i := range frames {
			f := fmt.Sprintf(`[{"channel":%q,"clientId":%q,"id":"%d","data":{"i":%d}}]`, ch, id, i+1, i)
			if err := ws.Write(ctx, websocket.MessageText, []byte(f)); err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
		}
		for i := range frames {
			r, ok := <-replies
			if !ok {
				t.Fatalf("socket ended after %d replies", i)
			}
			if r["id"] != strconv.Itoa(i+1) || r["successful"] != true {
				t.Fatalf("reply %d: %v, want id %d successful (replies in frame order)", i, r, i+1)
			}
		}

		peer := &bayeuxtest.Peer{T: t, URL: c.Nodes[2].URL}
		lp := peer.Handshake(nil)
		var msgs []bayeuxtest.Msg
		for i := range batch {
			msgs = append(msgs, bayeuxtest.Msg{"channel": ch, "clientId": lp, "id": strconv.Itoa(i + 1), "data": map[string]int{"i": frames + i}})
		}
		got := peer.Post(msgs...)
		if len(got) != batch {
			t.Fatalf("batch of %d publishes: %d replies: %v", batch, len(got), got)
		}
		for i, r := range got {
			if r["id"] != strconv.Itoa(i+1) || r["successful"] != true {
				t.Fatalf("batch reply %d: %v, want id %d successful, in order", i, r, i+1)
			}
		}

		waitReceived(t, []*rawSubscriber{sub}, frames+batch, 30*time.Second)
		data, _ := sub.received()
		for i, raw := range data {
			var d struct{ I int }
			if err := json.Unmarshal([]byte(raw), &d); err != nil || d.I != i {
				t.Fatalf("delivery %d: %s, want i=%d (missing, doubled or reordered)", i, raw, i)
			}
		}
	})
}

// wsHandshake handshakes over ws and returns the clientId.
func wsHandshake(ctx context.Context, t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	hs := `[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}]`
	if err := ws.Write(ctx, websocket.MessageText, []byte(hs)); err != nil {
		t.Fatal(err)
	}
	_, data, err := ws.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ms []msg
	if err := json.Unmarshal(data, &ms); err != nil {
		t.Fatal(err)
	}
	r := find(ms, "/meta/handshake")
	if r == nil || r["successful"] != true {
		t.Fatalf("handshake: %s", data)
	}
	return r["clientId"].(string)
}
