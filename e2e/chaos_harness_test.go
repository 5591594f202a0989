package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
	"github.com/bayeux-cluster/bayeux/pkg/client"
)

// The chaos harness: publishers at a fixed rate and subscribers of every
// kind (ack or replay extension, over long-polling, callback-polling or
// websocket), all through the balancer, around one fault; then the figures.

const (
	chaosPublishers      = 3
	chaosPublishInterval = 20 * time.Millisecond // 50 msg/s per publisher
	chaosSubsPerGroup    = 6
	chaosPublishTimeout  = 3 * time.Second
)

// chaosGroup is one kind of subscriber.
type chaosGroup struct {
	name      string
	transport string
	replay    bool // replay extension (and no ack); else ack extension
}

var chaosGroups = []chaosGroup{
	{"ack-cp", protocol.CallbackPolling, false},
	{"ack-lp", protocol.LongPolling, false},
	{"ack-ws", protocol.WebSocket, false},
	{"replay-cp", protocol.CallbackPolling, true},
	{"replay-lp", protocol.LongPolling, true},
	{"replay-ws", protocol.WebSocket, true},
}

// chaosKey identifies one publication: publisher and sequence number.
type chaosKey struct{ P, S int }

var quietLog = slog.New(slog.DiscardHandler)

func chaosClientConfig(url, transport string, replay bool) client.Config {
	return client.Config{
		URL:        url,
		Transports: []string{transport},
		DisableAck: replay,
		Replay:     replay,
		BackoffMin: 50 * time.Millisecond,
		BackoffMax: time.Second,
		Logger:     quietLog,
	}
}

// chaosSub is one subscriber: it records every delivery by key.
type chaosSub struct {
	group   chaosGroup
	c       *client.Client
	startID string

	mu         sync.Mutex
	seen       map[chaosKey]int
	distinct   int // len(seen)
	deliveries int
	noReplayID int // deliveries without a replay id (replay subscribers)
	bad        string
}

// parseChaosKey reads the publisher and sequence of a test message.
func parseChaosKey(m *client.Message) (chaosKey, bool) {
	var d struct{ P, S *int }
	if err := json.Unmarshal(m.Data, &d); err != nil || d.P == nil || d.S == nil {
		return chaosKey{}, false
	}
	return chaosKey{*d.P, *d.S}, true
}

func (s *chaosSub) handle(m *client.Message) {
	k, ok := parseChaosKey(m)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok {
		if s.bad == "" {
			s.bad = fmt.Sprintf("delivery on %s is not a chaos message: %s", m.Channel, m.Data)
		}
		return
	}
	if s.seen[k]++; s.seen[k] == 1 {
		s.distinct++
	}
	s.deliveries++
	if s.group.replay && m.ReplayID == 0 {
		s.noReplayID++
	}
}

// missing returns how many of acked s has not received (at least that
// many, when it is not 0).
func (s *chaosSub) missing(acked []chaosKey) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.distinct < len(acked) {
		return len(acked) - s.distinct // at least
	}
	n := 0
	for _, k := range acked {
		if s.seen[k] == 0 {
			n++
		}
	}
	return n
}

// chaosPub publishes {"p":id,"s":seq} every chaosPublishInterval to the
// channels in turn. A publish that fails is not acknowledged, and the next
// one carries the next sequence number.
type chaosPub struct {
	id      int
	c       *client.Client
	timeout time.Duration // per publish (chaosPublishTimeout unless set)

	mu        sync.Mutex
	published int
	acked     []chaosKey
	failures  map[string]int // error text (shortened) -> count
	// unanswered counts publishes that got neither an acknowledgement
	// nor a refusal (a Bayeux error) within their timeout.
	unanswered int
	started    bool // run was started (set before it starts)
	stop       chan struct{}
	done       chan struct{}
}

func (p *chaosPub) run(channels []string) {
	defer close(p.done)
	tick := time.NewTicker(chaosPublishInterval)
	defer tick.Stop()
	timeout := p.timeout
	if timeout == 0 {
		timeout = chaosPublishTimeout
	}
	for seq := 0; ; seq++ {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		k := chaosKey{p.id, seq}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := p.c.Publish(ctx, channels[seq%len(channels)], json.RawMessage(fmt.Sprintf(`{"p":%d,"s":%d}`, k.P, k.S)))
		cancel()
		p.mu.Lock()
		p.published++
		if err == nil {
			p.acked = append(p.acked, k)
		} else {
			p.failures[shortErr(err)]++
			var ce *client.Error
			switch {
			case errors.As(err, &ce): // refused
			case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF):
				// Failed at once, not left waiting: the balancer closed
				// the connection the request went out on (nginx closes
				// its idle keep-alive connections when reloaded, as the
				// rolling restart does; a request that meets the close
				// gets a reset or, when the FIN comes first, EOF before
				// any response). Only the balancer closes a client's
				// connection: a node that fails gives 502.
			default:
				p.unanswered++
			}
		}
		p.mu.Unlock()
	}
}

func (p *chaosPub) ackedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

// shortErr tells the kind of a publish error: the Bayeux error code and
// message without the channel, or the start of a transport error.
func shortErr(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		return fmt.Sprintf("%d %s", ce.Err.Code, ce.Err.Message)
	}
	s := err.Error()
	if len(s) > 160 {
		s = s[:160]
	}
	return s
}

// chaosRun is one scenario's traffic.
type chaosRun struct {
	t        *testing.T
	name     string
	channels []string
	subs     []*chaosSub
	pubs     []*chaosPub
}

// dialOwnedBy dials through the balancer until the session is owned by
// the node with tag (the clientId's prefix), so that every node owns its
// share of subscribers and publishers whatever the balancer's turns.
func dialOwnedBy(ctx context.Context, cfg client.Config, tag string) (*client.Client, error) {
	for attempt := 0; ; attempt++ {
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(c.ClientID(), tag) {
			return c, nil
		}
		_ = c.Close(ctx)
		if attempt == 30 {
			return nil, fmt.Errorf("no session owned by %s in %d handshakes through the balancer", tag, attempt+1)
		}
		nudgeBalancer(ctx, cfg.URL)
	}
}

// nudgeBalancer sends one request through the balancer: a dial takes a
// fixed number of requests, which can be a multiple of the number of
// nodes, so that round-robin would hand every handshake to the same
// nodes; one more request shifts the rotation.
func nudgeBalancer(ctx context.Context, bayeuxURL string) {
	u, err := url.Parse(bayeuxURL)
	if err != nil {
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.Scheme+"://"+u.Host+"/healthz", nil)
	if err != nil {
		return
	}
	if resp, err := http.DefaultClient.Do(req); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
}

// startChaos dials every subscriber and publisher through the cluster's
// balancer (each group and the publishers spread evenly over the nodes'
// ownership), subscribes them and starts publishing; it returns after
// every subscriber received something from every publisher and a second
// of steady traffic.
func startChaos(t *testing.T, name string, cl *testproc.Cluster) *chaosRun {
	t.Helper()
	return startChaosWith(t, name, cl, chaosOptions{publishTimeout: chaosPublishTimeout})
}

// chaosOptions tune a scenario's clients.
type chaosOptions struct {
	publishTimeout time.Duration // each publish's
	// timeoutMargin, if set, is the clients' client.Config.TimeoutMargin:
	// how long past the server's connect timeout a connect is awaited
	// before the client gives up on it and connects again.
	timeoutMargin time.Duration
}

// answeredOptions: each publish waits long enough for an answer
// (acknowledgement or refusal) through any fault a scenario stages, so
// that checkAnswered can require one for every publish.
var answeredOptions = chaosOptions{publishTimeout: 30 * time.Second}

// checkAnswered fails the test for every publisher with publishes that got
// neither an acknowledgement nor a refusal (a Bayeux error) within
// timeout, the publishers' timeout: a client left without an answer.
func (r *chaosRun) checkAnswered(timeout time.Duration) {
	r.t.Helper()
	for _, p := range r.pubs {
		p.mu.Lock()
		if p.unanswered > 0 {
			r.t.Errorf("publisher %d: %d publishes neither acknowledged nor refused within %v: %v", p.id, p.unanswered, timeout, p.failures)
		}
		p.mu.Unlock()
	}
}

// startChaosWith is startChaos with opts.
func startChaosWith(t *testing.T, name string, cl *testproc.Cluster, opts chaosOptions) *chaosRun {
	t.Helper()
	url := cl.URL()
	config := func(transport string, replay bool) client.Config {
		cfg := chaosClientConfig(url, transport, replay)
		cfg.TimeoutMargin = opts.timeoutMargin
		return cfg
	}
	owner := func(i int) string { return cl.Nodes[i%len(cl.Nodes)].Tag }
	r := &chaosRun{t: t, name: name}
	for _, ch := range []string{"a", "b", "c"} {
		r.channels = append(r.channels, "/chaos/"+name+"/"+ch)
	}
	t.Cleanup(r.closeAll)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(chaosGroups)*chaosSubsPerGroup+chaosPublishers)
	var mu sync.Mutex
	for _, g := range chaosGroups {
		for i := range chaosSubsPerGroup {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := &chaosSub{group: g, seen: map[chaosKey]int{}}
				c, err := dialOwnedBy(ctx, config(g.transport, g.replay), owner(i))
				if err != nil {
					errs <- fmt.Errorf("%s dial: %w", g.name, err)
					return
				}
				s.c = c
				mu.Lock()
				r.subs = append(r.subs, s)
				mu.Unlock()
				if !g.replay && !c.AckEnabled() {
					errs <- fmt.Errorf("%s: the server did not accept the ack extension", g.name)
					return
				}
				var opts []client.SubscribeOption
				if g.replay {
					opts = append(opts, client.WithReplayID(-1))
				}
				for _, ch := range r.channels {
					if _, err := c.Subscribe(ctx, ch, s.handle, opts...); err != nil {
						errs <- fmt.Errorf("%s subscribe %s: %w", g.name, ch, err)
						return
					}
				}
				s.startID = c.ClientID()
			}()
		}
	}
	for i := range chaosPublishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := protocol.LongPolling // the victim (node 1) owns one
			if i == chaosPublishers-1 {
				tr = protocol.WebSocket
			}
			c, err := dialOwnedBy(ctx, config(tr, false), owner(i))
			if err != nil {
				errs <- fmt.Errorf("publisher %d dial: %w", i, err)
				return
			}
			mu.Lock()
			r.pubs = append(r.pubs, &chaosPub{id: i, c: c, timeout: opts.publishTimeout, failures: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})})
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	slices.SortFunc(r.subs, func(a, b *chaosSub) int { return strings.Compare(a.group.name, b.group.name) })
	slices.SortFunc(r.pubs, func(a, b *chaosPub) int { return a.id - b.id })
	for _, p := range r.pubs {
		p.started = true
		go p.run(r.channels)
	}
	// Traffic flows to everyone before the fault.
	err := pollUntil(15*time.Second, func() error {
		for _, s := range r.subs {
			s.mu.Lock()
			from := map[int]bool{}
			for k := range s.seen {
				from[k.P] = true
			}
			s.mu.Unlock()
			if len(from) < chaosPublishers {
				return fmt.Errorf("%s subscriber %s has messages from %d of %d publishers", s.group.name, s.startID, len(from), chaosPublishers)
			}
		}
		return nil
	})
	if err == nil {
		err = r.flowing(50, 15*time.Second) // a second of steady traffic
	}
	if err != nil {
		t.Fatalf("before the fault: %v", err)
	}
	return r
}

// ackedCounts returns the number of acknowledged publishes of each
// publisher.
func (r *chaosRun) ackedCounts() []int {
	out := make([]int, len(r.pubs))
	for i, p := range r.pubs {
		out[i] = p.ackedCount()
	}
	return out
}

// flowing waits until every publisher has n more acknowledged publishes
// than now: traffic flows again after a fault.
func (r *chaosRun) flowing(n int, d time.Duration) error {
	base := r.ackedCounts()
	return pollUntil(d, func() error {
		for i, c := range r.ackedCounts() {
			if c-base[i] < n {
				return fmt.Errorf("publisher %d: %d acknowledged publishes since recovery, want %d", i, c-base[i], n)
			}
		}
		return nil
	})
}

// finish stops the publishers, waits until every subscriber has every
// acknowledged publish (or d passes), prints the figures line (and one
// line per subscriber group) and checks them: nothing lost, nothing
// doubled, a replay id on every delivery to a replay subscriber, and with
// keepIDs at least 99% of the subscribers still on their first session.
func (r *chaosRun) finish(d time.Duration, keepIDs bool) {
	t := r.t
	t.Helper()
	for _, p := range r.pubs {
		close(p.stop)
	}
	var acked []chaosKey
	published := 0
	for _, p := range r.pubs {
		<-p.done
		p.mu.Lock()
		acked = append(acked, p.acked...)
		published += p.published
		if len(p.failures) > 0 {
			t.Logf("publisher %d: %d of %d publishes failed: %v", p.id, p.published-len(p.acked), p.published, p.failures)
		}
		p.mu.Unlock()
	}
	waitErr := pollUntil(d, func() error {
		for _, s := range r.subs {
			if n := s.missing(acked); n > 0 {
				return fmt.Errorf("%s subscriber %s misses %d", s.group.name, s.startID, n)
			}
		}
		return nil
	})

	type figures struct {
		subs, delivMin, delivMax, lost, dup, rehs, kept, noReplay int
		lostKeys                                                  []chaosKey
	}
	total := figures{delivMin: -1}
	byGroup := map[string]*figures{}
	var problems []string
	for _, s := range r.subs {
		g := byGroup[s.group.name]
		if g == nil {
			g = &figures{delivMin: -1}
			byGroup[s.group.name] = g
		}
		s.mu.Lock()
		var f figures
		f.subs, f.delivMin, f.delivMax = 1, s.deliveries, s.deliveries
		for _, k := range acked {
			if s.seen[k] == 0 {
				f.lost++
				f.lostKeys = append(f.lostKeys, k)
			}
		}
		for k, n := range s.seen {
			f.dup += max(n-1, 0)
			if n > 1 && f.dup <= 20 {
				problems = append(problems, fmt.Sprintf("%s %s received %v %d times", s.group.name, s.c.ClientID(), k, n))
			}
		}
		f.noReplay = s.noReplayID
		if s.bad != "" {
			problems = append(problems, s.group.name+": "+s.bad)
		}
		s.mu.Unlock()
		f.rehs = s.c.Handshakes() - 1
		if id := s.c.ClientID(); id != "" && id == s.startID {
			f.kept = 1
		}
		if err := s.c.Err(); err != nil {
			problems = append(problems, fmt.Sprintf("%s subscriber %s stopped: %v", s.group.name, s.startID, err))
		}
		for _, agg := range []*figures{&total, g} {
			agg.subs += f.subs
			if agg.delivMin < 0 || f.delivMin < agg.delivMin {
				agg.delivMin = f.delivMin
			}
			agg.delivMax = max(agg.delivMax, f.delivMax)
			agg.lost += f.lost
			agg.dup += f.dup
			agg.rehs += f.rehs
			agg.kept += f.kept
			agg.noReplay += f.noReplay
			agg.lostKeys = append(agg.lostKeys, f.lostKeys...)
		}
	}
	line := fmt.Sprintf("CHAOS scenario=%s published=%d acknowledged=%d delivered_min=%d delivered_max=%d lost=%d duplicated=%d rehandshakes=%d clientid_kept=%d/%d",
		r.name, published, len(acked), total.delivMin, total.delivMax, total.lost, total.dup, total.rehs, total.kept, total.subs)
	t.Log(line)
	fmt.Println(line)
	for _, g := range chaosGroups {
		f := byGroup[g.name]
		if f == nil {
			continue
		}
		extra := ""
		if g.replay {
			extra = fmt.Sprintf(" without_replay_id=%d", f.noReplay)
		}
		t.Logf("  %-9s subscribers=%d delivered_min=%d delivered_max=%d lost=%d duplicated=%d rehandshakes=%d clientid_kept=%d/%d%s%s",
			g.name, f.subs, f.delivMin, f.delivMax, f.lost, f.dup, f.rehs, f.kept, f.subs, extra, lostSummary(f.lostKeys))
	}
	pubRehs := 0
	for _, p := range r.pubs {
		pubRehs += p.c.Handshakes() - 1
	}
	t.Logf("  publishers rehandshakes=%d", pubRehs)

	if waitErr != nil {
		t.Errorf("not every acknowledged publish delivered within %v: %v", d, waitErr)
	}
	for _, p := range problems {
		t.Error(p)
	}
	if want := chaosPublishers * 100; len(acked) < want {
		t.Errorf("only %d publishes acknowledged, want at least %d", len(acked), want)
	}
	if total.lost != 0 {
		t.Errorf("lost=%d: acknowledged publishes some subscriber never received", total.lost)
	}
	if total.dup != 0 {
		t.Errorf("duplicated=%d: deliveries a subscriber already had", total.dup)
	}
	for _, g := range chaosGroups {
		if f := byGroup[g.name]; g.replay && f != nil && f.noReplay > 0 {
			t.Errorf("%s: %d deliveries without a replay id (the server did not apply the replay extension)", g.name, f.noReplay)
		}
	}
	if keepIDs && total.kept*100 < total.subs*99 {
		t.Errorf("clientid_kept=%d/%d: at least 99%% of the subscribers must keep their session across the fault", total.kept, total.subs)
	}
}

// lostSummary describes which publications were lost: per publisher, the
// range of sequence numbers and how many.
func lostSummary(keys []chaosKey) string {
	if len(keys) == 0 {
		return ""
	}
	type span struct{ lo, hi, n int }
	by := map[int]*span{}
	for _, k := range keys {
		s := by[k.P]
		if s == nil {
			by[k.P] = &span{k.S, k.S, 1}
			continue
		}
		s.lo, s.hi, s.n = min(s.lo, k.S), max(s.hi, k.S), s.n+1
	}
	var parts []string
	for p := range chaosPublishers {
		if s := by[p]; s != nil {
			parts = append(parts, fmt.Sprintf("p%d:s%d-s%d(%d)", p, s.lo, s.hi, s.n))
		}
	}
	return " lost_seqs=" + strings.Join(parts, ",")
}

// closeAll closes every client (concurrently, bounded).
func (r *chaosRun) closeAll() {
	var wg sync.WaitGroup
	closeOne := func(c *client.Client) {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	}
	for _, p := range r.pubs {
		if p.started {
			select {
			case <-p.stop:
			default:
				close(p.stop)
			}
			<-p.done
		}
		wg.Add(1)
		go closeOne(p.c)
	}
	for _, s := range r.subs {
		if s.c != nil {
			wg.Add(1)
			go closeOne(s.c)
		}
	}
	wg.Wait()
}

// pollUntil polls f until it returns nil or d passes, and returns f's last
// error if it never did.
func pollUntil(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readyAll waits until every node in nodes answers /readyz with want.
func readyAll(nodes []*testproc.Node, want int, d time.Duration) error {
	return pollUntil(d, func() error {
		for _, n := range nodes {
			if err := readyz(n, want); err != nil {
				return fmt.Errorf("node %s: %w", n.Tag, err)
			}
		}
		return nil
	})
}

// backplaneAll waits until every node in nodes is ready and reports its
// backplane down (or up) in /readyz.
func backplaneAll(nodes []*testproc.Node, down bool, d time.Duration) error {
	return pollUntil(d, func() error {
		for _, n := range nodes {
			if err := backplaneDown(n, down); err != nil {
				return fmt.Errorf("node %s: %w", n.Tag, err)
			}
		}
		return nil
	})
}

// membersOf returns the number of members node n reports.
func membersOf(n *testproc.Node) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return n.Members(ctx)
}
