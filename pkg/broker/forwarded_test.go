package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

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

// failingRouter sends every unknown session to a node it cannot reach (or
// whose reply does not come back): its creator, "gone", is alive.
type failingRouter struct{}

func (failingRouter) Creator(string) (string, bool)          { return "gone", true }
func (failingRouter) Alive(string) bool                      { return true }
func (failingRouter) Live() []string                         { return []string{"gone"} }
func (failingRouter) Quorum() bool                           { return true }
func (failingRouter) FailedFor(string) (time.Duration, bool) { return 0, false }
func (failingRouter) AdoptDelay() time.Duration              { return 0 }

func (failingRouter) Forward(context.Context, string, *ForwardedRequest) (*ForwardedResponse, error) {
	return nil, errors.New("connection reset by peer")
}

func (failingRouter) SessionOp(context.Context, string, string, SessionOpKind) (bool, error) {
	return false, errors.New("unreachable")
}

// TestForwardedConnectReplyLost: when a forwarded request that holds a
// /meta/connect gets no response from the owner (which may have answered
// it with messages), the client's reply is lost the way a failed
// connection is (HTTP 503 that is not Bayeux, a websocket closed with
// 1013), so that the client resends the connect; Faye's family resends
// the same id and gets the batch again. Other requests get Bayeux 503
// replies with retry advice.
func TestForwardedConnectReplyLost(t *testing.T) {
	tb := newRoutedTestBroker(t, failingRouter{}, nil)
	const id = "elsewhere0123456789"
	connect := msg{"channel": "/meta/connect", "clientId": id, "connectionType": protocol.LongPolling, "id": "7"}
	publish := msg{"channel": "/x", "clientId": id, "data": 1, "id": "8"}

	t.Run("long-polling connect", func(t *testing.T) {
		r := post(t, nil, tb.url, []msg{connect})
		if r.Status != http.StatusServiceUnavailable || r.Msgs != nil || json.Valid(r.Body) {
			t.Fatalf("lost connect reply: HTTP %d %q; want 503 with a body that is not JSON", r.Status, r.Body)
		}
	})
	t.Run("long-polling publish", func(t *testing.T) {
		r := post(t, nil, tb.url, []msg{publish})
		if r.Status != http.StatusOK || len(r.Msgs) != 1 || r.Msgs[0]["successful"] != false ||
			!strings.HasPrefix(fmt.Sprint(r.Msgs[0]["error"]), "503:") {
			t.Fatalf("forwarded publish: HTTP %d %s; want a Bayeux 503 reply", r.Status, r.Body)
		}
	})
	t.Run("websocket connect", func(t *testing.T) {
		ws := tb.wsDial(t)
		c := maps.Clone(connect)
		c["connectionType"] = protocol.WebSocket
		ws.send(c)
		_, err := ws.recv(5 * time.Second)
		if got := websocket.CloseStatus(err); got != 1013 {
			t.Fatalf("websocket after a lost connect reply: %v (close status %d); want closed with 1013", err, got)
		}
	})
}
