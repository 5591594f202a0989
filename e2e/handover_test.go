package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// TestHandOver: a session follows its websocket (docs/architecture.md
// section 12, hand-over). An ack-extension session made on node 0 is
// served by a websocket on node 1 (the session moves there: its record
// names node 1), at once by one on node 2 (within --handover-hold, 5 s: not
// moved, forwarded to node 1), then, after the hold, by one on node 0
// again (moved back). A publisher on node 2 publishes all along; the
// subscriber must get every acknowledged publish exactly once, in order.
func TestHandOver(t *testing.T) {
	c := testproc.StartCluster(t, 3, "--timeout", "2s", "--handover-hold", "5s", "--history-size", "10000")
	rc := redis.NewClient(&redis.Options{Addr: c.Redis.Addr})
	defer rc.Close()
	ch := "/handover/a"
	sub := &bayeuxtest.Peer{T: t, URL: c.Nodes[0].URL}
	id := sub.Handshake(bayeuxtest.Msg{"ack": true})
	sub.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": ch})
	owner := func() string {
		o, err := rc.HGet(context.Background(), "bx:s:{"+id+"}", "o").Result()
		if err != nil {
			t.Fatalf("owner of %s: %v", id, err)
		}
		return o
	}
	if o := owner(); !strings.HasPrefix(o, c.Nodes[0].Tag) {
		t.Fatalf("owner %q, want node 0 (%s)", o, c.Nodes[0].Tag)
	}

	// The first move, with nothing published meanwhile: the Redis
	// commands that name the session or its channel (MONITOR).
	h := &hoClient{t: t, id: id}
	mon := monitorRedis(t, c.Redis.Addr)
	h.run(c.Nodes[1].URL, 300*time.Millisecond)
	top, inScripts := mon.stop(id, ch)
	t.Logf("HANDOVER-COST redis commands naming the session or its channel: %v; inside scripts: %v", top, inScripts)
	if o := owner(); !strings.HasPrefix(o, c.Nodes[1].Tag) {
		t.Fatalf("owner %q after the first move, want node 1 (%s)", o, c.Nodes[1].Tag)
	}

	pub := startSeqPublisher(t, c.Nodes[2].URL, ch, 5*time.Millisecond, true)
	steps := []struct {
		node  int
		pause time.Duration // before the step
		owner int           // the record's owner after it
	}{
		{2, 0, 1}, // within the hold: forwarded
		{0, 5500 * time.Millisecond, 0},
		{1, 5500 * time.Millisecond, 1},
	}
	for i, st := range steps {
		time.Sleep(st.pause)
		h.run(c.Nodes[st.node].URL, time.Second)
		if o := owner(); !strings.HasPrefix(o, c.Nodes[st.owner].Tag) {
			t.Fatalf("step %d (websocket on node %d): owner %q, want node %d (%s)", i, st.node, o, st.owner, c.Nodes[st.owner].Tag)
		}
	}
	acked := len(pub.stop())
	// The rest arrives on node 1.
	bayeuxtest.Eventually(t, 10*time.Second, func() error {
		h.run(c.Nodes[1].URL, 300*time.Millisecond)
		if n := h.count(); n < acked {
			return fmt.Errorf("received %d of %d acknowledged publishes", n, acked)
		}
		return nil
	})
	h.check(acked)
	moves := handOverTimes(c.Nodes)
	t.Logf("HANDOVER published=%d received=%d moves=%d took=%v", acked, h.count(), len(moves), moves)
	if len(moves) != 3 {
		t.Errorf("%d hand-overs logged, want 3", len(moves))
	}
}

// handOverTimes returns how long each hand-over the nodes logged took
// (the receiving node's view: op, record read and claim).
func handOverTimes(nodes []*testproc.Node) []string {
	re := regexp.MustCompile(`session handed over to this node.* took=(\S+)`)
	var out []string
	for _, n := range nodes {
		for _, m := range re.FindAllStringSubmatch(n.Log.String(), -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// hoClient is a raw ack-extension subscriber that moves its websocket from
// node to node, keeping its clientId and its acknowledged batch id.
type hoClient struct {
	t   testing.TB
	id  string
	ack int64
	mid int
	mu  sync.Mutex
	got []int // data.seq of each delivery, in order
}

// run connects over a websocket to url for d, then closes it; it fails
// the test on any error.
func (h *hoClient) run(url string, d time.Duration) {
	if err := h.session(url, d); err != nil {
		h.t.Fatal(err)
	}
}

// errSessionLost: the server ended the session (the clientId is lost).
var errSessionLost = errors.New("session lost")

// session connects over a websocket to url for d, then closes it. The
// deliveries of a connect are recorded only with its reply (which carries
// the batch id the next connect acknowledges): a reply lost with the
// socket leaves them unacknowledged, and the server sends them again.
// An unsuccessful connect with retry advice is an error; one that ends the
// session wraps errSessionLost.
func (h *hoClient) session(url string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d+15*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http"), nil)
	if err != nil {
		return fmt.Errorf("ws dial %s: %w", url, err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(64 << 20)
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		h.mid++
		m := msg{"channel": "/meta/connect", "clientId": h.id, "connectionType": "websocket", "id": fmt.Sprint(h.mid), "ext": msg{"ack": h.ack}}
		b, _ := json.Marshal([]msg{m})
		if err := ws.Write(ctx, websocket.MessageText, b); err != nil {
			return fmt.Errorf("ws write: %w", err)
		}
		var batch []msg
		for done := false; !done; {
			_, fr, err := ws.Read(ctx)
			if err != nil {
				return fmt.Errorf("ws read on %s: %w", url, err)
			}
			var frame []msg
			if err := json.Unmarshal(fr, &frame); err != nil {
				return fmt.Errorf("frame %s: %w", fr, err)
			}
			for _, r := range frame {
				if r["channel"] != "/meta/connect" {
					batch = append(batch, r)
					continue
				}
				if r["successful"] != true {
					if adv, ok := r["advice"].(map[string]any); ok && adv["reconnect"] == "retry" {
						return fmt.Errorf("connect on %s: %v", url, r)
					}
					return fmt.Errorf("connect on %s: %v: %w", url, r, errSessionLost)
				}
				if ext, ok := r["ext"].(map[string]any); ok {
					if a, ok := ext["ack"].(float64); ok {
						h.ack = int64(a)
					}
				}
				for _, d := range batch {
					h.record(d)
				}
				done = true
			}
		}
	}
	_ = ws.Close(websocket.StatusNormalClosure, "")
	return nil
}

func (h *hoClient) record(m msg) {
	d, ok := m["data"].(map[string]any)
	if !ok {
		h.t.Errorf("delivery without data: %v", m)
		return
	}
	h.mu.Lock()
	h.got = append(h.got, int(d["seq"].(float64)))
	h.mu.Unlock()
}

func (h *hoClient) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.got)
}

// check requires 0..acked-1 exactly once each, in order (anything after
// acked was published but not acknowledged before the publisher stopped).
func (h *hoClient) check(acked int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, s := range h.got {
		if s != i {
			h.t.Fatalf("delivery %d is seq %d (lost, duplicated or reordered); all: %v", i, s, h.got)
		}
	}
	if len(h.got) < acked {
		h.t.Fatalf("received %d, acknowledged %d", len(h.got), acked)
	}
}

// seqPublisher publishes {"seq": n} on one channel, n = 0, 1, ..., every
// interval, over long-polling through url. Strict, a publish that is not
// acknowledged fails the test and ends publishing; otherwise it is
// skipped (not acknowledged, not retried), and a session lost with its
// node (402) is replaced by a new handshake.
type seqPublisher struct {
	mu    sync.Mutex
	acked []int
	quit  chan struct{}
	done  chan struct{}
}

func startSeqPublisher(t *testing.T, url, ch string, every time.Duration, strict bool) *seqPublisher {
	p := &bayeuxtest.Peer{T: t, URL: url}
	id := p.Handshake(nil)
	sp := &seqPublisher{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(sp.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-sp.quit:
				return
			case <-tick.C:
			}
			r, err := p.TryPost(bayeuxtest.Msg{"channel": ch, "clientId": id, "data": msg{"seq": n}})
			switch {
			case err == nil && len(r) == 1 && r[0]["successful"] == true:
				sp.mu.Lock()
				sp.acked = append(sp.acked, n)
				sp.mu.Unlock()
			case strict:
				t.Errorf("publish %d: %v %v", n, r, err)
				return
			case err == nil && len(r) == 1 && isUnknownClient(r[0]):
				hs, herr := p.TryPost(bayeuxtest.Msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}})
				if herr == nil && len(hs) == 1 && hs[0]["successful"] == true {
					id = hs[0]["clientId"].(string)
				}
			}
		}
	}()
	return sp
}

// isUnknownClient: a 402 reply (the publisher's session died with its node).
func isUnknownClient(r bayeuxtest.Msg) bool {
	e, _ := r["error"].(string)
	return strings.HasPrefix(e, "402")
}

// stop ends publishing and returns the acknowledged sequence numbers.
func (sp *seqPublisher) stop() []int {
	close(sp.quit)
	<-sp.done
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return slices.Clone(sp.acked)
}

// redisMonitor is redis-cli MONITOR running in the background.
type redisMonitor struct {
	cmd *exec.Cmd
	out *testproc.SyncBuffer
}

func monitorRedis(t *testing.T, addr string) *redisMonitor {
	host, port, _ := strings.Cut(addr, ":")
	m := &redisMonitor{cmd: exec.Command("redis-cli", "-h", host, "-p", port, "monitor"), out: &testproc.SyncBuffer{}}
	m.cmd.Stdout = m.out
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("redis-cli monitor: %v", err)
	}
	t.Cleanup(func() { _ = m.cmd.Process.Kill(); _ = m.cmd.Wait() })
	bayeuxtest.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(m.out.String(), "OK") {
			return errors.New("monitor not started")
		}
		return nil
	})
	return m
}

// stop ends the monitor and counts, by command, the commands that name
// one of words: sent by clients, and run inside scripts.
func (m *redisMonitor) stop(words ...string) (top, inScripts map[string]int) {
	_ = m.cmd.Process.Kill()
	_ = m.cmd.Wait()
	top, inScripts = map[string]int{}, map[string]int{}
	for _, line := range strings.Split(m.out.String(), "\n") {
		if !slices.ContainsFunc(words, func(w string) bool { return strings.Contains(line, w) }) {
			continue
		}
		_, rest, ok := strings.Cut(line, "] ")
		if !ok {
			continue
		}
		name := strings.ToUpper(strings.Trim(strings.Fields(rest)[0], `"`))
		if strings.Contains(line, " lua]") {
			inScripts[name]++
		} else {
			top[name]++
		}
	}
	return top, inScripts
}
