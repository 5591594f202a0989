package broker

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

// refusingEngine is an engine.Memory whose Subscribe fails for one pattern
// (a backplane failing part-way through a multi-channel subscribe).
type refusingEngine struct {
	*engine.Memory
	refuse string
}

func (e *refusingEngine) Subscribe(ctx context.Context, pattern string) error {
	if pattern == e.refuse {
		return errors.New("refused by the test")
	}
	return e.Memory.Subscribe(ctx, pattern)
}

// TestSubscribeAllOrNothing: a subscribe to several channels that fails on
// one of them leaves the session subscribed to what it had before, no
// more (the earlier channels of the request are unsubscribed again), and
// the client is told it failed.
func TestSubscribeAllOrNothing(t *testing.T) {
	tests := []struct {
		name   string
		before []string // subscribed beforehand
		req    []string // the failing request ("/fail" is refused)
		want   []string // subscribed after it
	}{
		{"fresh", nil, []string{"/a", "/b/*", "/fail", "/c"}, nil},
		{"keeps what it had", []string{"/a"}, []string{"/a", "/b", "/fail"}, []string{"/a"}},
		{"fails first", nil, []string{"/fail", "/a"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTestBroker(t, func(c *Config) {
				c.Engine = &refusingEngine{Memory: engine.NewMemory(engine.MemoryConfig{}), refuse: "/fail"}
			})
			id := tb.handshake(t, nil)
			if len(tc.before) > 0 {
				tb.subscribe(t, id, tc.before...)
			}
			res := post(t, nil, tb.url, []msg{{"channel": "/meta/subscribe", "clientId": id, "subscription": tc.req}})
			if len(res.Msgs) != 1 || res.Msgs[0]["successful"] != false {
				t.Fatalf("subscribe %v: %s", tc.req, res.Body)
			}
			s, ok := tb.Session(id)
			if !ok {
				t.Fatal("session gone")
			}
			got := s.Subscriptions()
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("subscribed to %v after the failed subscribe, want %v", got, tc.want)
			}
			// Nothing is delivered on a channel the failed request named.
			tb.publish(t, id, "/b", 1)
			tb.publish(t, id, "/c", 1)
			poll := msg{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling", "advice": msg{"timeout": 0}}
			if d, _ := split(post(t, nil, tb.url, []msg{poll}).Msgs); len(d) != 0 {
				t.Errorf("delivered after the failed subscribe: %v", d)
			}
		})
	}
}
