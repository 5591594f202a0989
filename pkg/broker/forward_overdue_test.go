package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// silentRouter sends every unknown session to a live node, "owner", that
// never answers a forwarded request: Forward returns only when its
// context ends, and records why it ended.
type silentRouter struct {
	failingRouter
	mu     sync.Mutex
	causes []error
}

func (r *silentRouter) Forward(ctx context.Context, _ string, _ *ForwardedRequest) (*ForwardedResponse, error) {
	<-ctx.Done()
	r.mu.Lock()
	r.causes = append(r.causes, context.Cause(ctx))
	r.mu.Unlock()
	return nil, ctx.Err()
}

// cancelled returns why the forwarded requests ended, so far.
func (r *silentRouter) cancelled() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.causes...)
}

// TestForwardedConnectOverdue: a forwarded /meta/connect whose owner has
// not answered within its hold (the timeout it proposes, else the
// configured one) plus the margin is answered by the forwarding node and
// cancelled on the owner (which keeps the session's queue). A lone
// connect gets a successful reply with reconnect retry, over long-polling
// and websocket; a connect sent with other messages is lost the way a
// failed connection is (503 whose body is not Bayeux), since the owner
// may have processed the others.
func TestForwardedConnectOverdue(t *testing.T) {
	const (
		timeout = 600 * time.Millisecond
		margin  = 300 * time.Millisecond
		id      = "elsewhere0123456789"
	)
	connect := func(transport string, advice msg) msg {
		m := msg{"channel": "/meta/connect", "clientId": id, "connectionType": transport, "id": "7"}
		if advice != nil {
			m["advice"] = advice
		}
		return m
	}
	publish := msg{"channel": "/x", "clientId": id, "data": 1, "id": "8"}
	tests := []struct {
		name      string
		transport string
		msgs      []msg
		hold      time.Duration // the owner may hold it this long
		lost      bool
	}{
		{"long-polling", protocol.LongPolling, []msg{connect(protocol.LongPolling, nil)}, timeout, false},
		{"long-polling proposed timeout", protocol.LongPolling, []msg{connect(protocol.LongPolling, msg{"timeout": 100})}, 100 * time.Millisecond, false},
		{"websocket", protocol.WebSocket, []msg{connect(protocol.WebSocket, nil)}, timeout, false},
		{"long-polling with a publish", protocol.LongPolling, []msg{publish, connect(protocol.LongPolling, nil)}, timeout, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &silentRouter{}
			tb := startTestBroker(t, func(c *Config) { c.Timeout = timeout }, func(b *Broker) {
				b.SetCluster(r, nil)
				b.connectMargin = margin
			})
			start := time.Now()
			var replies []msg
			if tc.transport == protocol.WebSocket {
				ws := tb.wsDial(t)
				ws.send(tc.msgs...)
				got, err := ws.recv(10 * time.Second)
				if err != nil {
					t.Fatalf("websocket: no reply to the overdue connect: %v", err)
				}
				replies = got
			} else {
				res := post(t, nil, tb.url, tc.msgs)
				if tc.lost {
					if res.Status != http.StatusServiceUnavailable || json.Valid(res.Body) {
						t.Fatalf("overdue connect with a publish: HTTP %d %q; want 503 with a body that is not JSON", res.Status, res.Body)
					}
				} else if res.Status != http.StatusOK {
					t.Fatalf("overdue connect: HTTP %d %s", res.Status, res.Body)
				}
				replies = res.Msgs
			}
			took := time.Since(start)
			if took < tc.hold+margin {
				t.Errorf("answered after %v, before its hold %v plus the margin %v", took, tc.hold, margin)
			}
			if took > tc.hold+margin+3*time.Second {
				t.Errorf("answered after %v; want about its hold %v plus the margin %v", took, tc.hold, margin)
			}
			if !tc.lost {
				if err := overdueReply(replies); err != nil {
					t.Error(err)
				}
			}
			eventually(t, 5*time.Second, func() error {
				causes := r.cancelled()
				if len(causes) != 1 || !errors.Is(causes[0], errConnectOverdue) {
					return fmt.Errorf("the owner's request ended with %v; want one, cancelled as overdue", causes)
				}
				return nil
			})
		})
	}
}

// overdueReply checks replies is the one reply of an overdue connect:
// successful, reconnect retry, interval 0, and no messages.
func overdueReply(replies []msg) error {
	if len(replies) != 1 {
		return fmt.Errorf("overdue connect: %v; want its reply alone", replies)
	}
	r := replies[0]
	advice, _ := r["advice"].(map[string]any)
	if r["channel"] != "/meta/connect" || r["id"] != "7" || r["successful"] != true || r["clientId"] != "elsewhere0123456789" ||
		advice["reconnect"] != "retry" || advice["interval"] != float64(0) {
		return fmt.Errorf("overdue connect reply %v; want successful, clientId echoed, advice reconnect retry, interval 0", r)
	}
	return nil
}

// releasingRouter sends every unknown session to a live owner that holds
// a forwarded connect until it is asked to release it (SessionOp
// release-connect), then answers it with the reply it had made: one
// delivery, as an owner that answered as the bound passed would have.
type releasingRouter struct {
	failingRouter
	once     sync.Once
	released chan struct{}
}

func (r *releasingRouter) Forward(ctx context.Context, _ string, _ *ForwardedRequest) (*ForwardedResponse, error) {
	select {
	case <-r.released:
		return &ForwardedResponse{Body: []byte(`[{"channel":"/x","data":1},{"channel":"/meta/connect","id":"7","successful":true,"clientId":"elsewhere0123456789"}]`)}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r *releasingRouter) SessionOp(_ context.Context, _, _ string, op SessionOpKind) (bool, error) {
	if op != OpReleaseConnect {
		return false, errors.New("unexpected op " + string(op))
	}
	r.once.Do(func() { close(r.released) })
	return true, nil
}

// TestForwardedConnectOverdueReleased: past its hold plus the margin, a
// forwarded connect whose owner can be asked is released there, not
// cancelled: the owner's reply (with what it delivered) reaches the
// client. Cancelling it instead dropped such a reply, and its messages.
func TestForwardedConnectOverdueReleased(t *testing.T) {
	const (
		timeout = 300 * time.Millisecond
		margin  = 200 * time.Millisecond
	)
	r := &releasingRouter{released: make(chan struct{})}
	tb := startTestBroker(t, func(c *Config) { c.Timeout = timeout }, func(b *Broker) {
		b.SetCluster(r, nil)
		b.connectMargin = margin
	})
	start := time.Now()
	res := post(t, nil, tb.url, []msg{{"channel": "/meta/connect", "clientId": "elsewhere0123456789", "connectionType": protocol.LongPolling, "id": "7"}})
	if took := time.Since(start); took < timeout+margin {
		t.Errorf("answered after %v, before its hold %v plus the margin %v", took, timeout, margin)
	}
	if res.Status != http.StatusOK || len(res.Msgs) != 2 || res.Msgs[0]["channel"] != "/x" || res.Msgs[1]["successful"] != true {
		t.Fatalf("released connect: HTTP %d %v; want the owner's reply with its delivery", res.Status, res.Msgs)
	}
}
