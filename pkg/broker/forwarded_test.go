package broker

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// A connect forwarded to the session's owner is held by the gRPC call,
// whatever transport the client used: a delivery answers it at once (a
// websocket client's connect too; its socket is on the forwarding node,
// which pushes nothing for it).
func TestForwardedConnectAnsweredOnDelivery(t *testing.T) {
	for _, transport := range []string{protocol.LongPolling, protocol.WebSocket} {
		t.Run(transport, func(t *testing.T) {
			tb := newTestBroker(t, func(c *Config) { c.Timeout = 20 * time.Second })
			id := tb.handshake(t, nil)
			tb.subscribe(t, id, "/fwd")
			connect, _ := json.Marshal([]msg{{"channel": "/meta/connect", "clientId": id, "connectionType": transport}})
			type answer struct {
				resp *ForwardedResponse
				err  error
			}
			got := make(chan answer, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			go func() {
				resp, err := tb.ServeForwarded(ctx, &ForwardedRequest{Transport: transport, Parts: [][]byte{connect}, Hops: 1})
				got <- answer{resp, err}
			}()
			tb.waitHeld(t, id)
			pub := tb.handshake(t, nil)
			start := time.Now()
			tb.publish(t, pub, "/fwd", "hello")
			select {
			case a := <-got:
				if a.err != nil || !strings.Contains(string(a.resp.Body), `"channel":"/fwd"`) {
					t.Fatalf("forwarded connect: %v %s", a.err, a.resp.Body)
				}
				if took := time.Since(start); took > 5*time.Second {
					t.Fatalf("forwarded connect answered %v after the delivery", took)
				}
			case <-ctx.Done():
				t.Fatal("forwarded connect not answered on delivery")
			}
		})
	}
}
