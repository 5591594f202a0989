package e2e

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
	"github.com/bayeux-cluster/bayeux/pkg/client"
)

// The multi-host test (issue 8): every process on an address of its own,
// in Linux network namespaces on one bridge, as on separate hosts.

const (
	netnsNodes       = 10
	netnsSubsPerTr   = 6 // subscribers per transport (long-polling, websocket)
	netnsPublishers  = 4 // half long-polling, half websocket
	netnsConvergence = 15 * time.Second
)

// TestTenNodesAcrossNamespaces: a three-master Redis Cluster and ten
// nodes, each process in a network namespace of its own, the nodes joined
// into one gossip ring; nginx (root namespace) round-robins over the ten.
// Through it, publishers (long-polling and websocket, 50 msg/s each, three
// channels in turn) and subscribers (ack extension, long-polling and
// websocket, every channel). Under that traffic two nodes are drained
// (SIGTERM) and a new one joins in a fresh namespace (the balancer is
// reloaded with the eight survivors and the new node). Then every
// subscriber must have received, on each channel, the same sequence:
// every acknowledged publish, none twice, each publisher's in order; and
// kept its session. Lines for the record:
//
//	NETNS convergence_ms=N since_first_start_ms=N members=10
//	NETNS reconvergence_ms=N after_exit_ms=N members=9
//	NETNS published=N acknowledged=N delivered_min=N lost=N duplicated=N rehandshakes=N clientid_kept=K/M
func TestTenNodesAcrossNamespaces(t *testing.T) {
	testproc.NodeBinary(t) // build (once per test binary) before the clock starts
	testStart := time.Now()
	nw := testproc.StartNet(t)
	redisNS := nw.AddN(t, 3)
	nodeNS := nw.AddN(t, netnsNodes+1) // the last one for the node that joins later
	var redisHosts []testproc.Host
	for _, ns := range redisNS {
		redisHosts = append(redisHosts, ns)
	}
	rc := testproc.StartRedisClusterOn(t, redisHosts, 3, 0)
	t.Logf("bridge %s, %d namespaces, Redis Cluster %s ready after %v", nw.Bridge, 3+netnsNodes+1, rc.URL(), time.Since(testStart).Round(time.Millisecond))

	cl := &testproc.Cluster{Path: "/cometd"}
	firstStart := time.Now()
	for i := range netnsNodes {
		var seeds []string
		for _, n := range cl.Nodes[:min(i, 3)] {
			seeds = append(seeds, n.Gossip)
		}
		cl.Nodes = append(cl.Nodes, nodeNS[i].StartClusterNode(t, rc.URL(), seeds, chaosNodeArgs...))
	}
	lastStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), netnsConvergence)
	defer cancel()
	if err := cl.AwaitMembers(ctx, netnsNodes); err != nil {
		t.Fatalf("ten nodes did not converge within %v: %v", netnsConvergence, err)
	}
	line := fmt.Sprintf("NETNS convergence_ms=%d since_first_start_ms=%d members=%d",
		time.Since(lastStart).Milliseconds(), time.Since(firstStart).Milliseconds(), netnsNodes)
	t.Log(line)
	fmt.Println(line)

	var backends []string
	for _, n := range cl.Nodes {
		backends = append(backends, strings.TrimPrefix(n.Base, "http://"))
	}
	cl.Balancer = testproc.StartBalancer(t, backends)

	r := startNetnsTraffic(t, cl.URL())
	before := netnsCounters(t, cl.Nodes)
	if err := r.flowing(100, 15*time.Second); err != nil {
		t.Fatalf("traffic through the balancer: %v", err)
	}
	netnsCheckSpread(t, cl.Nodes, before, netnsCounters(t, cl.Nodes), r.creators(cl.Nodes))

	// Drain the two nodes owning most subscribers; a new node joins.
	victims := r.busiestOwners(cl.Nodes, 2)
	moved := 0
	for _, v := range victims {
		moved += r.creators(cl.Nodes)[v.Tag]
	}
	adoptedBefore := 0.0
	for _, c := range netnsCounters(t, cl.Nodes) {
		adoptedBefore += c.adopted
	}
	faultStart := time.Now()
	for _, v := range victims {
		t.Logf("draining node %s (%s): owns %d subscriber sessions", v.Tag, v.Base, r.creators(cl.Nodes)[v.Tag])
		if err := v.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	var seeds, survivors []string
	for _, n := range cl.Nodes {
		if !slices.Contains(victims, n) {
			seeds = append(seeds, n.Gossip)
			survivors = append(survivors, strings.TrimPrefix(n.Base, "http://"))
		}
	}
	joiner := nodeNS[netnsNodes].StartClusterNode(t, rc.URL(), seeds[:3], chaosNodeArgs...)
	cl.Nodes = append(cl.Nodes, joiner)
	cl.Balancer.SetBackends(t, append(survivors, strings.TrimPrefix(joiner.Base, "http://")))
	t.Logf("new node %s (%s) started and balancer reloaded %v after SIGTERM", joiner.Tag, joiner.Base, time.Since(faultStart).Round(time.Millisecond))
	for _, v := range victims {
		err, exited := v.Wait(15 * time.Second)
		if !exited {
			t.Fatalf("drained node %s did not exit within 15s", v.Tag)
		}
		if err != nil {
			t.Errorf("drained node %s exited with %v", v.Tag, err)
		}
	}
	exited := time.Now()
	for _, v := range victims {
		for _, l := range strings.Split(v.Log.String(), "\n") {
			if strings.Contains(l, "level=WARN") && !strings.Contains(l, "debug API") || strings.Contains(l, "level=ERROR") {
				t.Logf("drained node %s: %s", v.Tag, l)
			}
		}
	}
	t.Logf("drained nodes exited %v after SIGTERM", exited.Sub(faultStart).Round(time.Millisecond))
	ctx, cancel = context.WithTimeout(context.Background(), netnsConvergence)
	defer cancel()
	if err := cl.AwaitMembers(ctx, netnsNodes-1); err != nil {
		t.Fatalf("membership did not converge to %d: %v", netnsNodes-1, err)
	}
	line = fmt.Sprintf("NETNS reconvergence_ms=%d after_exit_ms=%d members=%d", time.Since(faultStart).Milliseconds(), time.Since(exited).Milliseconds(), netnsNodes-1)
	t.Log(line)
	fmt.Println(line)
	joinedAt := netnsCounters(t, []*testproc.Node{joiner})[0]
	if err := pollUntil(10*time.Second, func() error {
		if c := netnsCounters(t, []*testproc.Node{joiner})[0]; c.forwards <= joinedAt.forwards {
			return fmt.Errorf("the new node %s has served no request (forwarded none to a session's owner)", joiner.Tag)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if err := r.flowing(100, 15*time.Second); err != nil {
		t.Errorf("traffic after the drain: %v", err)
	}
	adopted := -adoptedBefore
	for _, n := range cl.Nodes {
		if !slices.Contains(victims, n) {
			adopted += netnsCounters(t, []*testproc.Node{n})[0].adopted
		}
	}
	t.Logf("sessions adopted by the survivors and the new node: %.0f (the drained nodes owned %d subscriber sessions)", adopted, moved)
	if adopted < float64(moved) {
		t.Errorf("only %.0f sessions adopted, but the drained nodes owned %d subscriber sessions", adopted, moved)
	}
	r.finish(t, 20*time.Second)
	t.Logf("test took %v", time.Since(testStart).Round(time.Millisecond))
}

// netnsSub is a subscriber (ack extension) recording each channel's
// deliveries in arrival order.
type netnsSub struct {
	transport string
	c         *client.Client
	startID   string

	mu   sync.Mutex
	seq  map[string][]chaosKey // channel -> deliveries in order
	bad  string
	seen int
}

func (s *netnsSub) handle(m *client.Message) {
	k, ok := parseChaosKey(m)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok {
		if s.bad == "" {
			s.bad = fmt.Sprintf("delivery on %s is not a test message: %s", m.Channel, m.Data)
		}
		return
	}
	s.seq[m.Channel] = append(s.seq[m.Channel], k)
	s.seen++
}

// sequence returns a copy of channel ch's deliveries.
func (s *netnsSub) sequence(ch string) []chaosKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seq[ch])
}

// netnsRun is the test's traffic: chaosPub publishers (they publish
// {"p":id,"s":seq} to channels[seq%3]) and netnsSub subscribers.
type netnsRun struct {
	channels []string
	subs     []*netnsSub
	pubs     []*chaosPub
	chaos    *chaosRun // the publishers, for flowing and closing
}

// startNetnsTraffic dials every subscriber and publisher through url,
// subscribes and starts publishing; it returns once every subscriber got
// something from every publisher.
func startNetnsTraffic(t *testing.T, url string) *netnsRun {
	t.Helper()
	r := &netnsRun{channels: []string{"/netns/a", "/netns/b", "/netns/c"}}
	r.chaos = &chaosRun{t: t, name: "netns", channels: r.channels}
	t.Cleanup(func() {
		r.chaos.closeAll() // publishers
		var wg sync.WaitGroup
		for _, s := range r.subs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = s.c.Close(ctx)
			}()
		}
		wg.Wait()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 2*netnsSubsPerTr+netnsPublishers)
	for _, tr := range []string{protocol.LongPolling, protocol.WebSocket} {
		for range netnsSubsPerTr {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := client.Dial(ctx, chaosClientConfig(url, tr, false))
				if err != nil {
					errs <- fmt.Errorf("%s subscriber dial: %w", tr, err)
					return
				}
				s := &netnsSub{transport: tr, c: c, seq: map[string][]chaosKey{}}
				mu.Lock()
				r.subs = append(r.subs, s)
				mu.Unlock()
				if !c.AckEnabled() {
					errs <- fmt.Errorf("%s: the server did not accept the ack extension", tr)
					return
				}
				for _, ch := range r.channels {
					if _, err := c.Subscribe(ctx, ch, s.handle); err != nil {
						errs <- fmt.Errorf("%s subscribe %s: %w", tr, ch, err)
						return
					}
				}
				s.startID = c.ClientID()
			}()
		}
	}
	for i := range netnsPublishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := protocol.LongPolling
			if i%2 == 1 {
				tr = protocol.WebSocket
			}
			c, err := client.Dial(ctx, chaosClientConfig(url, tr, false))
			if err != nil {
				errs <- fmt.Errorf("publisher %d dial: %w", i, err)
				return
			}
			mu.Lock()
			r.pubs = append(r.pubs, &chaosPub{id: i, c: c, failures: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})})
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	slices.SortFunc(r.pubs, func(a, b *chaosPub) int { return a.id - b.id })
	r.chaos.pubs = r.pubs
	for _, p := range r.pubs {
		p.started = true
		go p.run(r.channels)
	}
	err := pollUntil(15*time.Second, func() error {
		for _, s := range r.subs {
			from := map[int]bool{}
			for _, ch := range r.channels {
				for _, k := range s.sequence(ch) {
					from[k.P] = true
				}
			}
			if len(from) < netnsPublishers {
				return fmt.Errorf("%s subscriber %s has messages from %d of %d publishers", s.transport, s.startID, len(from), netnsPublishers)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("traffic does not flow: %v", err)
	}
	return r
}

// flowing waits until every publisher has n more acknowledged publishes.
func (r *netnsRun) flowing(n int, d time.Duration) error { return r.chaos.flowing(n, d) }

// creators counts, by node tag, the subscriber sessions each node created
// (the clientId's prefix): before any drain, the sessions it owns.
func (r *netnsRun) creators(nodes []*testproc.Node) map[string]int {
	out := map[string]int{}
	for _, s := range r.subs {
		for _, n := range nodes {
			if strings.HasPrefix(s.startID, n.Tag) {
				out[n.Tag]++
			}
		}
	}
	return out
}

// busiestOwners returns the k nodes owning most subscriber sessions
// (before any drain).
func (r *netnsRun) busiestOwners(nodes []*testproc.Node, k int) []*testproc.Node {
	own := r.creators(nodes)
	sorted := slices.Clone(nodes)
	sort.SliceStable(sorted, func(i, j int) bool { return own[sorted[i].Tag] > own[sorted[j].Tag] })
	return sorted[:k]
}

// netnsFigures are a node's request figures (from /metrics).
type netnsFigures struct{ connects, forwards, adopted float64 }

func netnsCounters(t *testing.T, nodes []*testproc.Node) []netnsFigures {
	t.Helper()
	out := make([]netnsFigures, len(nodes))
	for i, n := range nodes {
		m := n.Metrics(t)
		out[i] = netnsFigures{m["bayeux_connects_total"], m[`bayeux_grpc_forwards_total{result="ok"}`], m["bayeux_sessions_adopted_total"]}
	}
	return out
}

// netnsCheckSpread checks that the balancer spread the sessions' requests over
// every node: each forwarded requests over gRPC to the sessions' owners
// (it served sessions it does not own), and sessions were created on
// several nodes. (bayeux_connects_total counts where a connect is
// processed, the owner, so it does not show who received it.)
func netnsCheckSpread(t *testing.T, nodes []*testproc.Node, before, after []netnsFigures, creators map[string]int) {
	t.Helper()
	var parts []string
	notForwarding, creating := 0, 0
	for i, n := range nodes {
		c, f := after[i].connects-before[i].connects, after[i].forwards-before[i].forwards
		parts = append(parts, fmt.Sprintf("%s:forwards=%.0f,owned_connects=%.0f,created=%d", n.Tag, f, c, creators[n.Tag]))
		if f == 0 {
			notForwarding++
		}
		if creators[n.Tag] > 0 {
			creating++
		}
	}
	t.Logf("requests per node while traffic flowed: %s", strings.Join(parts, " "))
	if notForwarding > 0 {
		t.Errorf("%d of %d nodes forwarded no request to a session's owner: the balancer did not spread the sessions' requests", notForwarding, len(nodes))
	}
	if creating < 3 {
		t.Errorf("subscriber sessions created on only %d nodes", creating)
	}
}

// finish stops the publishers, waits until every subscriber has every
// acknowledged publish and the subscribers' sequences are as long as each
// other (or d passes), prints the figures and checks, per channel: one
// sequence shared by every subscriber, nothing doubled, every acknowledged
// publish in it, each publisher's publishes in order; and every client
// alive on its first session.
func (r *netnsRun) finish(t *testing.T, d time.Duration) {
	t.Helper()
	acked := map[string][]chaosKey{}
	published, nAcked := 0, 0
	for _, p := range r.pubs {
		close(p.stop)
		<-p.done
		p.mu.Lock()
		for _, k := range p.acked {
			ch := r.channels[k.S%len(r.channels)]
			acked[ch] = append(acked[ch], k)
		}
		published += p.published
		nAcked += len(p.acked)
		if len(p.failures) > 0 {
			t.Logf("publisher %d: %d of %d publishes failed: %v", p.id, p.published-len(p.acked), p.published, p.failures)
		}
		p.mu.Unlock()
	}
	missing := func(s *netnsSub, ch string) int {
		have := map[chaosKey]bool{}
		for _, k := range s.sequence(ch) {
			have[k] = true
		}
		n := 0
		for _, k := range acked[ch] {
			if !have[k] {
				n++
			}
		}
		return n
	}
	waitErr := pollUntil(d, func() error {
		for _, ch := range r.channels {
			for _, s := range r.subs {
				if n := missing(s, ch); n > 0 {
					return fmt.Errorf("%s subscriber %s misses %d acknowledged publishes on %s", s.transport, s.startID, n, ch)
				}
				if a, b := len(s.sequence(ch)), len(r.subs[0].sequence(ch)); a != b {
					return fmt.Errorf("%s has %d deliveries for one subscriber and %d for another", ch, a, b)
				}
			}
		}
		return nil
	})
	if waitErr != nil {
		t.Errorf("after %v: %v", d, waitErr)
	}

	lost, dup, rehs, kept, delivMin := 0, 0, 0, 0, -1
	reported := 0
	report := func(format string, args ...any) { // the first 20 problems
		if reported++; reported <= 20 {
			t.Errorf(format, args...)
		}
	}
	for _, ch := range r.channels {
		ref := r.subs[0].sequence(ch)
		seen := map[chaosKey]bool{}
		next := map[int]int{} // publisher -> lowest sequence number allowed next
		for i, k := range ref {
			if seen[k] {
				dup++
				report("%s: %v delivered twice (position %d)", ch, k, i)
			}
			seen[k] = true
			if k.S < next[k.P] {
				report("%s: publisher %d's publish %d at position %d after a later one of its own", ch, k.P, k.S, i)
			}
			next[k.P] = k.S + 1
		}
		for _, s := range r.subs {
			lost += missing(s, ch)
			got := s.sequence(ch)
			if i := netnsFirstDiff(got, ref); i >= 0 {
				report("%s: %s subscriber %s's sequence (%d deliveries) differs from the first subscriber's (%d) at position %d",
					ch, s.transport, s.startID, len(got), len(ref), i)
			}
		}
	}
	for _, s := range r.subs {
		s.mu.Lock()
		if s.bad != "" {
			t.Error(s.bad)
		}
		if delivMin < 0 || s.seen < delivMin {
			delivMin = s.seen
		}
		s.mu.Unlock()
		rehs += s.c.Handshakes() - 1
		if s.c.ClientID() == s.startID {
			kept++
		}
		if err := s.c.Err(); err != nil {
			t.Errorf("%s subscriber %s stopped: %v", s.transport, s.startID, err)
		}
	}
	for _, p := range r.pubs {
		if err := p.c.Err(); err != nil {
			t.Errorf("publisher %d stopped: %v", p.id, err)
		}
	}
	line := fmt.Sprintf("NETNS published=%d acknowledged=%d delivered_min=%d lost=%d duplicated=%d rehandshakes=%d clientid_kept=%d/%d",
		published, nAcked, delivMin, lost, dup, rehs, kept, len(r.subs))
	t.Log(line)
	fmt.Println(line)
	if reported > 20 {
		t.Errorf("%d more order problems not shown", reported-20)
	}
	if lost != 0 {
		t.Errorf("lost=%d: acknowledged publishes some subscriber never received", lost)
	}
	if kept != len(r.subs) {
		t.Errorf("clientid_kept=%d/%d: every subscriber must keep its session across the drain", kept, len(r.subs))
	}
	if want := netnsPublishers * 200; nAcked < want {
		t.Errorf("only %d publishes acknowledged, want at least %d", nAcked, want)
	}
}

// netnsFirstDiff returns the first index where a and b differ (a length
// difference counts), or -1.
func netnsFirstDiff(a, b []chaosKey) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
