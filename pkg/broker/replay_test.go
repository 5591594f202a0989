package broker_test

// These tests are in the external test package because they run the real
// ext.Ack and ext.Replay extensions (package ext imports package broker).
// The helpers here are shared with adopt_test.go.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/ext"
)

type Msg = bayeuxtest.Msg

var quietLog = slog.New(slog.DiscardHandler)

// xnode is a broker served over HTTP with the extensions of cmd/node.
type xnode struct {
	b    *broker.Broker
	peer *bayeuxtest.Peer

	stopOnce sync.Once
	stopFn   func(graceful bool)
}

// startXNode starts a broker with short timeouts; mutate adjusts the config
// before New, setup (if not nil) runs after New and before the broker runs
// or serves (SetCluster).
func startXNode(t *testing.T, mutate func(*broker.Config), setup func(*broker.Broker)) *xnode {
	t.Helper()
	cfg := broker.Config{
		Timeout: 2 * time.Second, MaxInterval: 10 * time.Second, SweepInterval: 50 * time.Millisecond,
		Extensions: []broker.Extension{ext.Ack{}, ext.Replay{}},
		Logger:     quietLog,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	if setup != nil {
		setup(b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	srv := httptest.NewServer(b)
	n := &xnode{b: b, peer: &bayeuxtest.Peer{T: t, URL: srv.URL, Client: &http.Client{}}}
	n.stopFn = func(graceful bool) {
		if graceful {
			sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = b.Shutdown(sctx)
			scancel()
		}
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		<-done
	}
	t.Cleanup(func() { n.stop(true) })
	return n
}

// stop stops the node; graceful=false is a crash (no drain, no shutdown).
func (n *xnode) stop(graceful bool) { n.stopOnce.Do(func() { n.stopFn(graceful) }) }

// handshakeX handshakes with ext and returns the reply (successful or not).
func handshakeX(t *testing.T, p *bayeuxtest.Peer, ext Msg) Msg {
	t.Helper()
	hs := Msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}}
	if ext != nil {
		hs["ext"] = ext
	}
	r := p.Post(hs)
	if len(r) != 1 || r[0]["successful"] != true {
		t.Fatalf("handshake: %v", r)
	}
	return r[0]
}

// openX handshakes, performs the first (immediate) connect, and returns
// the clientId.
func openX(t *testing.T, p *bayeuxtest.Peer, ext Msg) string {
	t.Helper()
	id := handshakeX(t, p, ext)["clientId"].(string)
	var cext Msg
	if ext["ack"] == true {
		cext = Msg{"ack": 0}
	}
	if _, r := bayeuxtest.Split(p.Connect(id, cext)); len(r) != 1 || r[0]["successful"] != true {
		t.Fatalf("first connect: %v", r)
	}
	return id
}

// subscribeX subscribes id to ch, with ext.replay if replay is not nil, and
// returns the reply.
func subscribeX(t *testing.T, p *bayeuxtest.Peer, id string, ch any, replay map[string]int64) Msg {
	t.Helper()
	m := Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": ch}
	if replay != nil {
		m["ext"] = Msg{"replay": replay}
	}
	r := p.Post(m)
	if len(r) != 1 {
		t.Fatalf("subscribe reply: %v", r)
	}
	return r[0]
}

// publishX publishes {"n": v} on ch for each v, through HTTP as id.
func publishX(t *testing.T, p *bayeuxtest.Peer, id, ch string, vs ...int) {
	t.Helper()
	for _, v := range vs {
		p.MustSucceed(Msg{"channel": ch, "clientId": id, "data": Msg{"n": v}})
	}
}

// pollX sends a /meta/connect that is answered at once (advice.timeout 0)
// with whatever the session has queued, and returns the deliveries and the
// connect reply.
func pollX(t *testing.T, p *bayeuxtest.Peer, id string, ext Msg) ([]Msg, Msg) {
	t.Helper()
	return pollXID(t, p, id, ext, "")
}

// pollXID is pollX with the connect's message id msgID (raw JSON; ""
// for none).
func pollXID(t *testing.T, p *bayeuxtest.Peer, id string, ext Msg, msgID string) ([]Msg, Msg) {
	t.Helper()
	m := Msg{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling", "advice": Msg{"timeout": 0}}
	if ext != nil {
		m["ext"] = ext
	}
	if msgID != "" {
		m["id"] = json.RawMessage(msgID)
	}
	d, r := bayeuxtest.Split(p.Post(m))
	if len(r) != 1 || r[0]["channel"] != "/meta/connect" {
		t.Fatalf("connect replies: %v (deliveries %v)", r, d)
	}
	return d, r[0]
}

// delivery is what a test checks of a delivered publication.
type delivery struct {
	Channel string
	N       int   // data.n
	Replay  int64 // ext.replay; -1 when absent
}

func (d delivery) String() string { return fmt.Sprintf("%s#%d(r%d)", d.Channel, d.N, d.Replay) }

func deliveriesOf(t *testing.T, ms []Msg) []delivery {
	t.Helper()
	out := make([]delivery, 0, len(ms))
	for _, m := range ms {
		d := delivery{Replay: -1}
		d.Channel, _ = m["channel"].(string)
		data, ok := m["data"].(map[string]any)
		if !ok {
			t.Fatalf("delivery without object data: %v", m)
		}
		d.N = int(data["n"].(float64))
		if e, ok := m["ext"].(map[string]any); ok {
			r, ok := e["replay"].(float64)
			if !ok {
				t.Fatalf("delivery ext without a numeric replay id: %v", m)
			}
			d.Replay = int64(r)
		}
		out = append(out, d)
	}
	return out
}

// ns returns the data.n values of ds.
func ns(ds []delivery) []int {
	out := make([]int, len(ds))
	for i, d := range ds {
		out[i] = d.N
	}
	return out
}

func seqInts(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// replayExt returns the ext.replay object of a reply.
func replayExt(m Msg) (any, bool) {
	e, ok := m["ext"].(map[string]any)
	if !ok {
		return nil, false
	}
	v, ok := e["replay"]
	return v, ok
}

func TestReplayHandshake(t *testing.T) {
	n := startXNode(t, nil, nil)
	tests := []struct {
		name string
		ext  Msg
		want any // ext.replay of the reply; nil: absent
	}{
		{"replay true", Msg{"replay": true}, true},
		{"replay false", Msg{"replay": false}, nil},
		{"no ext", nil, nil},
		{"replay not a bool", Msg{"replay": "yes"}, nil},
		{"with ack", Msg{"replay": true, "ack": true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := handshakeX(t, n.peer, tt.ext)
			got, ok := replayExt(r)
			if tt.want == nil && ok {
				t.Fatalf("reply ext.replay = %v, want absent (%v)", got, r)
			}
			if tt.want != nil && got != tt.want {
				t.Fatalf("reply ext.replay = %v, want %v (%v)", got, tt.want, r)
			}
			s, _ := n.b.Session(r["clientId"].(string))
			if s == nil || s.ReplayEnabled() != (tt.want != nil) {
				t.Fatalf("session replay enabled = %v, want %v", s != nil && s.ReplayEnabled(), tt.want != nil)
			}
		})
	}
}

func TestReplayIDsOnDeliveries(t *testing.T) {
	n := startXNode(t, nil, nil)
	p := n.peer
	pub := openX(t, p, nil)
	tests := []struct {
		name       string
		ext        Msg
		wantReplay bool
	}{
		{"replay session", Msg{"replay": true}, true},
		{"replay and ack session", Msg{"replay": true, "ack": true}, true},
		{"plain session", nil, false},
		{"ack session", Msg{"ack": true}, false},
	}
	const ch = "/ids/fresh"
	ids := make([]string, len(tests))
	for i, tt := range tests {
		ids[i] = openX(t, p, tt.ext)
		if r := subscribeX(t, p, ids[i], ch, nil); r["successful"] != true {
			t.Fatalf("subscribe: %v", r)
		}
	}
	publishX(t, p, pub, ch, 1, 2, 3)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cext Msg
			if tt.ext["ack"] == true {
				cext = Msg{"ack": 0}
			}
			raw, _ := pollX(t, p, ids[i], cext)
			got := deliveriesOf(t, raw)
			if !slices.Equal(ns(got), []int{1, 2, 3}) {
				t.Fatalf("deliveries %v, want n = 1, 2, 3", got)
			}
			for j, d := range got {
				want := int64(-1)
				if tt.wantReplay {
					want = int64(j + 1) // offsets on a fresh channel
				}
				if d.Replay != want {
					t.Fatalf("delivery %d: replay id %d, want %d (%v)", j, d.Replay, want, raw[j])
				}
				if _, has := raw[j]["ext"]; !tt.wantReplay && has {
					t.Fatalf("delivery %d to a session without replay carries ext: %v", j, raw[j])
				}
			}
		})
	}
}

func TestReplaySubscribe(t *testing.T) {
	n := startXNode(t, nil, nil)
	p := n.peer
	pub := openX(t, p, nil)
	tests := []struct {
		name      string
		pattern   string // subscription; "" means the test's concrete channel
		replay    func(ch string) map[string]int64
		wantErr   string // substring of the error; "" means success
		wantStart any    // ext.replay[ch] of the reply (float64); nil: absent
		wantHist  []int  // replayed before the live 6 and 7
	}{
		{"all retained", "", func(ch string) map[string]int64 { return map[string]int64{ch: -2} }, "", float64(0), seqInts(1, 5)},
		{"after 0", "", func(ch string) map[string]int64 { return map[string]int64{ch: 0} }, "", float64(0), seqInts(1, 5)},
		{"after 3", "", func(ch string) map[string]int64 { return map[string]int64{ch: 3} }, "", float64(3), []int{4, 5}},
		{"after head", "", func(ch string) map[string]int64 { return map[string]int64{ch: 5} }, "", float64(5), nil},
		{"new only", "", func(ch string) map[string]int64 { return map[string]int64{ch: -1} }, "", float64(5), nil},
		{"no replay ext", "", func(string) map[string]int64 { return nil }, "", float64(5), nil},
		{"other channel's id ignored", "", func(string) map[string]int64 { return map[string]int64{"/elsewhere": 2} }, "", float64(5), nil},
		{"beyond head", "", func(ch string) map[string]int64 { return map[string]int64{ch: 99} }, "replayId {99}", nil, nil},
		{"below -2", "", func(ch string) map[string]int64 { return map[string]int64{ch: -3} }, "replayId", nil, nil},
		{"id on wildcard", "*", func(ch string) map[string]int64 { return map[string]int64{ch: 2} }, "400:", nil, nil},
		{"new only on wildcard", "*", func(ch string) map[string]int64 { return map[string]int64{ch: -1} }, "", nil, nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := fmt.Sprintf("/rs/%d/c", i)
			publishX(t, p, pub, ch, seqInts(1, 5)...)
			pattern := ch
			if tt.pattern == "*" {
				pattern = fmt.Sprintf("/rs/%d/*", i)
			}
			id := openX(t, p, Msg{"replay": true})
			r := subscribeX(t, p, id, pattern, tt.replay(pattern))
			if tt.wantErr != "" {
				e, _ := r["error"].(string)
				if r["successful"] != false || !strings.HasPrefix(e, "400:") || !strings.Contains(e, tt.wantErr) {
					t.Fatalf("subscribe reply %v: want successful:false, error 400 containing %q", r, tt.wantErr)
				}
				// Nothing was subscribed: later publications do not arrive.
				publishX(t, p, pub, ch, 6)
				if d, _ := pollX(t, p, id, nil); len(d) != 0 {
					t.Fatalf("refused subscription delivered %v", d)
				}
				return
			}
			if r["successful"] != true {
				t.Fatalf("subscribe: %v", r)
			}
			starts, ok := replayExt(r)
			if tt.wantStart == nil {
				if m, _ := starts.(map[string]any); ok && m[pattern] != nil {
					t.Fatalf("reply ext.replay %v, want no start for %s", starts, pattern)
				}
			} else if m, _ := starts.(map[string]any); m[ch] != tt.wantStart {
				t.Fatalf("reply ext.replay %v, want {%s: %v}", starts, ch, tt.wantStart)
			}
			// A live publication queued behind the replayed ones, then
			// another after they were delivered.
			publishX(t, p, pub, ch, 6)
			d1, _ := pollX(t, p, id, nil)
			publishX(t, p, pub, ch, 7)
			d2, _ := pollX(t, p, id, nil)
			got := deliveriesOf(t, append(d1, d2...))
			want := append(slices.Clone(tt.wantHist), 6, 7)
			if !slices.Equal(ns(got), want) {
				t.Fatalf("delivered n = %v, want %v", ns(got), want)
			}
			for _, d := range got {
				if d.Replay != int64(d.N) { // n = offset on these channels
					t.Fatalf("delivery %v: replay id is not its offset", d)
				}
			}
		})
	}
}

// TestReplaySubscribeWhilePublishing checks the boundary between history
// and live publications: a replay subscription made while publications
// keep arriving sees every offset once, in order.
//
// A wildcard watcher keeps the engine interested in the channels, so the
// broker's own boundary (live publications wait in pending, history is
// queued, pending is appended without the publications history covered)
// is what is tested. Without it a publication can be lost, by
// engine.Memory itself (see the skipped case).
func TestReplaySubscribeWhilePublishing(t *testing.T) {
	tests := []struct {
		name    string
		watched bool  // another session subscribes to /race/** first
		from    int64 // the replay id
		iters   int
		skip    string
	}{
		{"all, channel watched", true, -2, 20, ""},
		{"after 10, channel watched", true, 10, 20, ""},
		{"id 0, channel watched", true, 0, 20, ""},
		// engine.Memory.Publish decides interest under the channel lock,
		// so a publication racing the first Subscribe of its channel is
		// either in the history the replay reads or delivered live.
		{"all, first subscriber", false, -2, 200, ""},
	}
	for ti, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.skip != "" {
				t.Skip(tt.skip)
			}
			// History and queues hold everything one test publishes, so
			// that only the boundary can lose or repeat a publication.
			n := startXNode(t, func(c *broker.Config) {
				c.Engine = engine.NewMemory(engine.MemoryConfig{HistorySize: 10000})
				c.MaxQueueMessages = 1 << 20
			}, nil)
			p := n.peer
			if tt.watched {
				w := openX(t, p, nil)
				if r := subscribeX(t, p, w, "/race/**", nil); r["successful"] != true {
					t.Fatalf("watcher: %v", r)
				}
			}
			ctx := context.Background()
			for it := range tt.iters {
				ch := fmt.Sprintf("/race/%d/%d", ti, it)
				publish := func(v int) {
					if _, err := n.b.Publish(ctx, ch, json.RawMessage(fmt.Sprintf(`{"n":%d}`, v))); err != nil {
						t.Errorf("publish %d: %v", v, err)
					}
				}
				const prefill, maxLive = 20, 2000
				for v := 1; v <= prefill; v++ {
					publish(v)
				}
				id := openX(t, p, Msg{"replay": true})
				// Publish until the subscription is made, then a few more.
				stop := make(chan struct{})
				last := make(chan int, 1)
				go func() {
					v := prefill + 1
					for ; v <= prefill+maxLive; v++ {
						publish(v)
						select {
						case <-stop:
							for end := v + 5; v < end; {
								v++
								publish(v)
							}
							last <- v
							return
						default:
							runtime.Gosched()
						}
					}
					last <- v - 1
				}()
				r := subscribeX(t, p, id, ch, map[string]int64{ch: tt.from})
				close(stop)
				total := <-last
				if r["successful"] != true {
					t.Fatalf("subscribe: %v", r)
				}
				first := 1
				if tt.from > 0 {
					first = int(tt.from) + 1
				}
				var got []delivery
				bayeuxtest.Eventually(t, 5*time.Second, func() error {
					d, _ := pollX(t, p, id, nil)
					got = append(got, deliveriesOf(t, d)...)
					if k := len(got); k == 0 || got[k-1].N < total {
						return fmt.Errorf("iteration %d: %d deliveries so far, want %d..%d", it, k, first, total)
					}
					return nil
				})
				if want := seqInts(first, total); !slices.Equal(ns(got), want) {
					t.Fatalf("iteration %d: delivered %d, want each of %d..%d once in order: %s", it, len(got), first, total, seqDiff(ns(got), want))
				}
			}
		})
	}
}

// seqDiff describes how got differs from want: values missing, repeated,
// or out of order.
func seqDiff(got, want []int) string {
	count := map[int]int{}
	for _, v := range got {
		count[v]++
	}
	var missing, repeated []int
	for _, v := range want {
		switch c := count[v]; {
		case c == 0:
			missing = append(missing, v)
		case c > 1:
			repeated = append(repeated, v)
		}
	}
	sorted := slices.IsSorted(got)
	return fmt.Sprintf("missing %v, repeated %v, in order %v", missing, repeated, sorted)
}

// TestReplayResubscribe covers a client resynchronising on a channel it
// already subscribes: what is queued or unacknowledged there is replaced
// by history after the id it gives.
func TestReplayResubscribe(t *testing.T) {
	n := startXNode(t, nil, nil)
	p := n.peer
	pub := openX(t, p, nil)
	tests := []struct {
		name string
		from int64
		want []int // next connect, after 1..3 were delivered and 4 queued
	}{
		{"reply with 1..3 lost", 0, []int{1, 2, 3, 4}},
		{"had 1..2", 2, []int{3, 4}},
		{"had everything delivered", 3, []int{4}},
		{"new only keeps the queue", -1, []int{4}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := fmt.Sprintf("/resync/%d", i)
			id := openX(t, p, Msg{"replay": true})
			if r := subscribeX(t, p, id, ch, map[string]int64{ch: -1}); r["successful"] != true {
				t.Fatalf("subscribe: %v", r)
			}
			publishX(t, p, pub, ch, 1, 2, 3)
			if d, _ := pollX(t, p, id, nil); !slices.Equal(ns(deliveriesOf(t, d)), []int{1, 2, 3}) {
				t.Fatalf("first batch: %v", d)
			}
			publishX(t, p, pub, ch, 4)
			r := subscribeX(t, p, id, ch, map[string]int64{ch: tt.from})
			if r["successful"] != true {
				t.Fatalf("resubscribe: %v", r)
			}
			wantStart := float64(tt.from)
			if tt.from == -1 {
				wantStart = 4 // the head
			}
			if starts, _ := replayExt(r); starts.(map[string]any)[ch] != wantStart {
				t.Fatalf("resubscribe reply ext.replay = %v, want {%s: %v}", starts, ch, wantStart)
			}
			d1, _ := pollX(t, p, id, nil)
			publishX(t, p, pub, ch, 5)
			d2, _ := pollX(t, p, id, nil)
			got := deliveriesOf(t, append(d1, d2...))
			want := append(slices.Clone(tt.want), 5)
			if !slices.Equal(ns(got), want) {
				t.Fatalf("after resubscribe from %d: n = %v, want %v", tt.from, ns(got), want)
			}
			for _, d := range got {
				if d.Replay != int64(d.N) {
					t.Fatalf("delivery %v: replay id is not its offset", d)
				}
			}
		})
	}
}

// TestReplayBeyondRetainedHistory uses an engine that keeps 3 publications
// per channel: after 10, offsets 8..10 are retained.
func TestReplayBeyondRetainedHistory(t *testing.T) {
	n := startXNode(t, func(c *broker.Config) {
		c.Engine = engine.NewMemory(engine.MemoryConfig{HistorySize: 3})
	}, nil)
	p := n.peer
	pub := openX(t, p, nil)
	tests := []struct {
		name    string
		from    int64
		wantErr string
		want    []int
		skip    string
	}{
		{"oldest id long gone", 1, "replayId {1}", nil, ""},
		{"next needed just trimmed", 6, "replayId {6}", nil, ""},
		{"next needed is the oldest retained", 7, "", []int{8, 9, 10}, ""},
		{"at head", 10, "", nil, ""},
		{"all retained", -2, "", []int{8, 9, 10}, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.skip != "" {
				t.Skip(tt.skip)
			}
			ch := fmt.Sprintf("/tiny/%d", i)
			publishX(t, p, pub, ch, seqInts(1, 10)...)
			id := openX(t, p, Msg{"replay": true})
			r := subscribeX(t, p, id, ch, map[string]int64{ch: tt.from})
			if tt.wantErr != "" {
				e, _ := r["error"].(string)
				if r["successful"] != false || !strings.HasPrefix(e, "400:") || !strings.Contains(e, tt.wantErr) {
					t.Fatalf("subscribe reply %v: want 400 containing %q", r, tt.wantErr)
				}
				return
			}
			if r["successful"] != true {
				t.Fatalf("subscribe: %v", r)
			}
			publishX(t, p, pub, ch, 11)
			d, _ := pollX(t, p, id, nil)
			if got, want := ns(deliveriesOf(t, d)), append(slices.Clone(tt.want), 11); !slices.Equal(got, want) {
				t.Fatalf("delivered n = %v, want %v", got, want)
			}
		})
	}
}
