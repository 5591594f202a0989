package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// gate is an engine.BatchHandler that passes everything on to next and,
// once it has passed the first batch on, holds the engine's delivering
// goroutine until release is closed: meanwhile what Redis sends piles up
// in the reader's queue, as it does behind a busy consumer.
type gate struct {
	next    engine.BatchHandler
	held    chan struct{} // closed once the first batch is held
	release chan struct{}
	once    sync.Once
	opened  sync.Once

	mu    sync.Mutex
	sizes []int // batch sizes, in order
}

func newGate(next engine.BatchHandler) *gate {
	return &gate{next: next, held: make(chan struct{}), release: make(chan struct{})}
}

func (g *gate) OnPublication(p *engine.Publication) {
	g.OnPublications([]*engine.Publication{p})
}

func (g *gate) OnPublications(ps []*engine.Publication) {
	g.next.OnPublications(ps)
	g.mu.Lock()
	g.sizes = append(g.sizes, len(ps))
	g.mu.Unlock()
	g.once.Do(func() {
		close(g.held)
		<-g.release
	})
}

// open lets the held batch go, and every batch after it.
func (g *gate) open() { g.opened.Do(func() { close(g.release) }) }

func (g *gate) OnGap(ch string, from, to engine.Position) { g.next.OnGap(ch, from, to) }

func (g *gate) batchSizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.sizes...)
}

// waitHeld waits until the first batch is held.
func (g *gate) waitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-g.held:
	case <-time.After(5 * time.Second):
		t.Fatal("the first publication was not delivered within 5s")
	}
}

// batchRecorder is a recorder taking batches.
type batchRecorder struct{ *recorder }

func (b batchRecorder) OnPublications(ps []*engine.Publication) {
	for _, p := range ps {
		b.OnPublication(p)
	}
}

// waitQueued waits until the node's reader has read n messages ahead of
// delivery.
func waitQueued(t *testing.T, e *Redis, n int) {
	t.Helper()
	waitFor(t, 5*time.Second, fmt.Sprintf("%d messages read ahead", n), func() bool { return len(e.readers[0].q) == n })
}

// TestRedisDeliversWhatIsBufferedAsBatches: a message alone is delivered
// at once, alone; messages that arrive while the node is busy are
// delivered together, at most maxBatch at a time, in order.
func TestRedisDeliversWhatIsBufferedAsBatches(t *testing.T) {
	rs := testproc.StartRedis(t)
	e := newEngine(t, rs.URL(), nil)
	other := newEngine(t, rs.URL(), nil) // another node publishes
	rec := &recorder{}
	g := newGate(batchRecorder{rec})
	runWith(t, e, g)
	subscribe(t, e, "/batch/a")

	publish(t, other, "/batch/a", 1)
	g.waitHeld(t)
	const more = maxBatch + 44
	publish(t, other, "/batch/a", more)
	waitQueued(t, e, more)
	g.open()

	got := rec.waitPubs(t, "/batch/a", 1+more)
	if !slices.Equal(offsets(got), seq(1, 1+more)) {
		t.Fatalf("offsets %v, want 1..%d in order", offsets(got), 1+more)
	}
	if sizes, want := g.batchSizes(), []int{1, maxBatch, more - maxBatch}; !slices.Equal(sizes, want) {
		t.Fatalf("batches of %v, want %v", sizes, want)
	}
}

// gatedEngine is the Redis engine with the broker's handler behind g.
type gatedEngine struct {
	*Redis
	g *gate
}

func (ge gatedEngine) Run(ctx context.Context, h engine.Handler) error {
	ge.g.next = h.(engine.BatchHandler)
	return ge.Redis.Run(ctx, ge.g)
}

// TestWebSocketBatchIsOneFrame: messages buffered on a node's pub/sub
// connection while it is busy reach a websocket subscriber in one frame
// (one write), in order; a message alone is written at once.
func TestWebSocketBatchIsOneFrame(t *testing.T) {
	rs := testproc.StartRedis(t)
	e := newEngine(t, rs.URL(), nil)
	other := newEngine(t, rs.URL(), nil)
	g := newGate(nil)
	b, err := broker.New(broker.Config{Engine: gatedEngine{e, g}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	srv := httptest.NewServer(b)
	t.Cleanup(func() {
		g.open()
		srv.Close()
		cancel()
		_ = e.Close()
		<-done
	})
	ws := dialWS(t, srv.URL)
	const ch = "/batch/ws"
	ws.send(`[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}]`)
	id, _ := ws.recv()[0]["clientId"].(string)
	ws.send(fmt.Sprintf(`[{"channel":"/meta/subscribe","clientId":%q,"subscription":%q},{"channel":"/meta/connect","clientId":%q,"connectionType":"websocket"}]`, id, ch, id))
	if r := ws.recv(); len(r) != 2 || r[0]["successful"] != true {
		t.Fatalf("subscribe and first connect: %v", r)
	}
	ws.send(fmt.Sprintf(`[{"channel":"/meta/connect","clientId":%q,"connectionType":"websocket"}]`, id)) // held

	publishData := func(from, n int) {
		for i := from; i < from+n; i++ {
			pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := other.Publish(pctx, ch, protocol.AppendPublication(nil, ch, []byte(fmt.Sprintf(`{"n":%d}`, i)), nil, nil))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	publishData(0, 1)
	g.waitHeld(t)
	if f := ws.recv(); len(f) != 1 || f[0]["channel"] != ch {
		t.Fatalf("first frame %v, want the first message alone", f)
	}
	// Once the socket's writer goroutine has ended (it lingers a second
	// after a frame), the delivering goroutine writes the socket itself:
	// a frame per wake-up.
	waitFor(t, 5*time.Second, "the websocket writer to end", func() bool { return !goroutineIn("broker.(*wsConn).flushLoop") })
	const more = 200
	publishData(1, more)
	waitQueued(t, e, more)
	g.open()
	f := ws.recv()
	if len(f) != more {
		t.Fatalf("second frame has %d messages, want all %d in one frame", len(f), more)
	}
	for i, m := range f {
		if d, _ := m["data"].(map[string]any); m["channel"] != ch || d["n"] != float64(i+1) {
			t.Fatalf("message %d of the frame: %v, want n=%d on %s", i, m, i+1, ch)
		}
	}
}

// wsPeer is a raw websocket Bayeux client.
type wsPeer struct {
	t testing.TB
	c *websocket.Conn
}

func dialWS(t testing.TB, url string) *wsPeer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http"), nil)
	if err != nil {
		t.Fatalf("websocket dial: %v", err)
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { _ = c.CloseNow() })
	return &wsPeer{t: t, c: c}
}

func (w *wsPeer) send(frame string) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.c.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		w.t.Fatalf("websocket write: %v", err)
	}
}

// recv reads one frame (within 5s) and decodes its messages.
func (w *wsPeer) recv() []map[string]any {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, b, err := w.c.Read(ctx)
	if err != nil {
		w.t.Fatalf("websocket read: %v", err)
	}
	var out []map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		w.t.Fatalf("frame %s: %v", b, err)
	}
	return out
}

// goroutineIn reports whether a goroutine of this process runs fn.
func goroutineIn(fn string) bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn)
}
