package e2e

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// TestChaosRealPlainAdoption is "no silent gap for plain sessions after
// adoption" (issue "Real clients, real guarantees", item 6) with the
// unchanged third-party clients: 2 CometD clients WITHOUT AckExtension on
// each of long-polling, callback-polling and websocket and 4 Faye clients
// on each of long-polling and websocket (interop/chaos/real-clients.mjs,
// CHAOS_PLAIN=1), all owned by node 1 and subscribed to one channel
// through the balancer (nginx round-robin, which keeps sending the dead
// node its share until every client receives again), while two Go publishers owned by the other nodes
// publish 50 msg/s each. Node 1 is killed (SIGKILL). A plain session keeps
// no positions, so its adopter answers its first connect with 410 and
// handshake advice (pkg/broker/adopt_session.go): the client re-handshakes and
// subscribes again with a new clientId. For every client:
//
//   - it was told: a /meta/connect reply with reconnect "handshake";
//   - no silent gap: every acknowledged publish is delivered, or falls
//     between the last delivery of a session the client was told had
//     ended and the first delivery of its next session;
//   - it receives again: its last session (not its first) receives from
//     every publisher what was published after traffic recovered, and
//     everything after its first delivery;
//   - nothing is delivered twice or out of a publisher's order.
//
// One line per client kind:
//
//	CHAOS-PLAIN clients=<kind>/<transport> count=N delivered_min=N delivered_max=N told=K/N told_codes=map[code:N] rehandshakes=N resubscribe_failures=N missed_told=N silent_gaps=N lost=N duplicated=N reordered=N receiving_again=K/N
//
// missed_told counts the acknowledged publishes the clients of that kind
// did not receive because they were told their session ended (published
// between the kill and their new subscription); silent_gaps those missed
// without being told, lost those missed at the end.
//
// It found a silent gap in 3 of 13 runs, always for a Faye websocket
// client just after its re-handshake: Faye batches the connect with its
// re-subscription and proposes timeout 0 for it; the server echoed 0 in
// the advice, so Faye gave up on its next connect after 6 s (1.2 × its
// retry), closed its websocket and lost what was pushed on it meanwhile.
// The advice of such a connect is now the configured timeout.
func TestChaosRealPlainAdoption(t *testing.T) {
	start := time.Now()
	// Without the websocket hand-over: the subject is the adoption of
	// sessions their dead owner made, and with it a websocket session
	// follows its socket to whichever node the balancer gave it, so the
	// kill would miss the websocket clients.
	env := &chaosEnv{c: testproc.StartCluster(t, 3, append([]string{"--handover-hold", "0"}, chaosNodeArgs...)...)}
	r := startPlainPublishers(t, env.c)
	// BAYEUX_CHAOS_COMETD_PER_TRANSPORT and BAYEUX_CHAOS_FAYE_PER_TRANSPORT
	// change the number of clients (2 and 4 by default), to make a rare
	// failure likelier.
	rc := startRealClients(t, env.c, r.channels, "CHAOS_PLAIN=1", "CHAOS_JSFORCE=0",
		"CHAOS_COMETD_PER_TRANSPORT="+cmp.Or(os.Getenv("BAYEUX_CHAOS_COMETD_PER_TRANSPORT"), "2"),
		"CHAOS_FAYE_PER_TRANSPORT="+cmp.Or(os.Getenv("BAYEUX_CHAOS_FAYE_PER_TRANSPORT"), "4"))
	t.Logf("cluster, publishers and real clients ready in %v", time.Since(start).Round(time.Millisecond))
	if err := pollUntil(20*time.Second, func() error { return rc.receivedFromAll(t, len(r.pubs)) }); err != nil {
		t.Fatalf("real clients before the fault: %v", err)
	}
	for _, c := range rc.report(t) {
		if !strings.HasPrefix(c.First, env.c.Nodes[1].Tag) {
			t.Fatalf("%s/%s %s is not owned by the victim %s", c.Kind, c.Transport, c.First, env.c.Nodes[1].Tag)
		}
	}

	faultStart := time.Now()
	if err := chaosKill9(t, env); err != nil {
		t.Errorf("recovery from the fault: %v", err)
	}
	if err := r.flowing(50, 15*time.Second); err != nil {
		t.Errorf("traffic after the fault: %v", err)
	}
	mark := map[int]int{} // per publisher, its last acknowledged sequence once traffic flows again
	for _, p := range r.pubs {
		p.mu.Lock()
		mark[p.id] = p.acked[len(p.acked)-1].S
		p.mu.Unlock()
	}
	// Each client is told, re-handshakes and receives again. A third of
	// its requests reach the dead node: CometD backs off one second more
	// after each failure, Faye retries after 5 s each time (its retry), so
	// a streak of failures costs seconds (measured: the last client
	// received again 21-52 s after the kill, this wait starting about 5 s
	// after it). 90 s covers the worst case the broker is built for
	// (pkg/broker/grace.go: 11 failed CometD requests in a row, 66 s of
	// back-off).
	again := pollUntil(90*time.Second, func() error { return receivingAgain(rc.report(t), mark) })
	t.Logf("fault to every client receiving again: %v", time.Since(faultStart).Round(time.Millisecond))
	if again != nil {
		t.Errorf("after the fault: %v", again)
	}

	// Every client receives again: the dead node now leaves the balancer,
	// as a health check would take it out. Until then a third of each
	// client's requests reached it (502), and the failed attempts of one
	// client in a row are a geometric tail over the thousands of connects
	// a run makes (a connect per delivery or two): Faye sends a failed
	// connect again after its 5 s retry, CometD backs off one second
	// more after each failure. Seen: 3 to 7 attempts in a row, 15-35 s,
	// in most runs; one at the end outlasted the final wait, and the
	// client's last deliveries counted as lost.
	dropFromBalancer(t, env.c, 1)

	acked := r.stopPublishers()
	var by map[string]*plainFigures
	var problems []string
	var reps []realReport
	_ = pollUntil(45*time.Second, func() error {
		reps = rc.report(t)
		by, problems = measurePlain(reps, acked, mark)
		if len(problems) > 0 {
			return fmt.Errorf("%d problems", len(problems))
		}
		return nil
	})
	logLateConnects(t, reps)
	if len(reps) > 0 {
		// A client process whose event loop was blocked for seconds handles
		// replies late, and Faye gives up on a request by its own timer.
		t.Logf("real clients' event loop: up to %d ms late", reps[0].LoopLagMs)
	}
	for _, name := range slices.Sorted(maps.Keys(by)) {
		f := by[name]
		line := fmt.Sprintf("CHAOS-PLAIN clients=%s count=%d delivered_min=%d delivered_max=%d told=%d/%d told_codes=%v rehandshakes=%d resubscribe_failures=%d missed_told=%d silent_gaps=%d lost=%d duplicated=%d reordered=%d receiving_again=%d/%d",
			name, f.clients, f.delivMin, f.delivMax, f.told, f.clients, f.errors, f.rehs, f.resubFails, f.missedTold, f.silent, f.lost, f.dup, f.reordered, f.again, f.clients)
		t.Log(line)
		fmt.Println(line)
	}
	for _, p := range problems {
		t.Error(p)
	}
	if len(problems) > 0 {
		for _, c := range reps {
			t.Logf("%s/%s %s -> %s: told %v; its last connects:\n  %s", c.Kind, c.Transport, c.First, c.Last, c.Told, strings.Join(c.Trace, "\n  "))
			if g, ok := by[c.Kind+"/"+c.Transport].firstGap[c.First]; ok && len(c.Log) > 0 {
				t.Logf("%s/%s %s around its first silent gap (p%d s%d to s%d):\n  %s", c.Kind, c.Transport, c.First, g.p, g.prev, g.next, strings.Join(g.window(c.Log), "\n  "))
			}
		}
	}
	t.Logf("scenario took %v", time.Since(start).Round(time.Millisecond))
}

// startPlainPublishers starts two publishers (Go clients, long-polling,
// through the balancer) owned by nodes 0 and 2, publishing on one channel.
func startPlainPublishers(t *testing.T, cl *testproc.Cluster) *chaosRun {
	t.Helper()
	r := &chaosRun{t: t, name: "plain-kill9", channels: []string{"/chaos/plain-kill9/a"}}
	t.Cleanup(r.closeAll)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, node := range []*testproc.Node{cl.Nodes[0], cl.Nodes[2]} {
		c, err := dialOwnedBy(ctx, chaosClientConfig(cl.URL(), protocol.LongPolling, false), node.Tag)
		if err != nil {
			t.Fatalf("publisher %d: %v", i, err)
		}
		r.pubs = append(r.pubs, &chaosPub{id: i, c: c, failures: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})})
	}
	for _, p := range r.pubs {
		p.started = true
		go p.run(r.channels)
	}
	return r
}

// stopPublishers stops the publishers and returns, per publisher, its
// acknowledged sequence numbers in order.
func (r *chaosRun) stopPublishers() map[int][]int {
	out := map[int][]int{}
	for _, p := range r.pubs {
		close(p.stop)
		<-p.done
		p.mu.Lock()
		for _, k := range p.acked {
			out[p.id] = append(out[p.id], k.S)
		}
		if len(p.failures) > 0 {
			r.t.Logf("publisher %d: %d of %d publishes failed: %v", p.id, p.published-len(p.acked), p.published, p.failures)
		}
		p.mu.Unlock()
	}
	return out
}

// receivingAgain: every client is on a session after its first and has
// received there, from every publisher, a publication after mark.
func receivingAgain(reps []realReport, mark map[int]int) error {
	for _, c := range reps {
		if err := c.receivingAgain(mark); err != nil {
			return err
		}
	}
	return nil
}

func (c realReport) receivingAgain(mark map[int]int) error {
	last := slices.Max(append([]int{0}, c.Sessions...))
	if last < 2 {
		return fmt.Errorf("%s/%s %s: still on its first session (told %v)", c.Kind, c.Transport, c.First, c.Told)
	}
	for p, m := range mark {
		if !slices.ContainsFunc(c.keyIndexes(), func(i int) bool { return c.Keys[i][0] == p && c.Keys[i][1] > m && c.Sessions[i] == last }) {
			return fmt.Errorf("%s/%s %s: session %d has received nothing from publisher %d after s%d", c.Kind, c.Transport, c.First, last, p, m)
		}
	}
	return nil
}

func (c realReport) keyIndexes() []int {
	out := make([]int, min(len(c.Keys), len(c.Sessions)))
	for i := range out {
		out[i] = i
	}
	return out
}

// plainFigures are the figures of one kind of plain client.
type plainFigures struct {
	clients, delivMin, delivMax, told, rehs, again int
	resubFails                                     int
	missedTold, silent, lost, dup, reordered       int
	errors                                         map[string]int   // told: error code -> clients
	firstGap                                       map[string]gapAt // clientId -> its first silent gap
}

// gapAt is a silent gap: publisher p's deliveries prev and next, with
// what was acknowledged between them missing.
type gapAt struct{ p, prev, next int }

// window returns the lines of a client's log from a few before the
// delivery of g.prev to a few after that of g.next.
func (g gapAt) window(log []string) []string {
	from, to := -1, len(log)
	for i, l := range log {
		if strings.HasSuffix(l, fmt.Sprintf(" d p%d s%d", g.p, g.prev)) {
			from = i
		}
		if strings.HasSuffix(l, fmt.Sprintf(" d p%d s%d", g.p, g.next)) {
			to = i
			break
		}
	}
	if from < 0 {
		return nil
	}
	return log[max(from-20, 0):min(to+5, len(log))]
}

// measurePlain computes the figures per client kind: acked holds each
// publisher's acknowledged sequences (one channel), mark each publisher's
// last acknowledged sequence once traffic flowed again after the fault.
func measurePlain(reps []realReport, acked map[int][]int, mark map[int]int) (map[string]*plainFigures, []string) {
	by := map[string]*plainFigures{}
	var problems []string
	problem := func(format string, args ...any) {
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	for _, c := range reps {
		name := c.Kind + "/" + c.Transport
		f := by[name]
		if f == nil {
			f = &plainFigures{delivMin: len(c.Keys), errors: map[string]int{}, firstGap: map[string]gapAt{}}
			by[name] = f
		}
		f.clients++
		f.delivMin, f.delivMax = min(f.delivMin, len(c.Keys)), max(f.delivMax, len(c.Keys))
		f.rehs += max(c.Handshakes-1, 0)
		f.resubFails += c.ResubscribeFailures
		for _, tl := range c.Told {
			code, _, _ := strings.Cut(tl.Error, ":")
			f.errors[code]++
		}
		if len(c.Told) > 0 {
			f.told++
		} else {
			problem("%s %s was never told to handshake again", name, c.First)
		}
		if c.receivingAgain(mark) == nil {
			f.again++
		} else {
			problem("%v", c.receivingAgain(mark))
		}
		if len(c.Sessions) != len(c.Keys) {
			problem("%s %s: %d sessions for %d deliveries", name, c.First, len(c.Sessions), len(c.Keys))
			continue
		}
		for p, seqs := range acked {
			c.measureGaps(f, p, seqs, problem)
		}
	}
	return by, problems
}

// measureGaps counts, for the deliveries of publisher p to client c,
// duplicates, reorders and every acknowledged sequence after the first
// delivery that c did not receive: missed because told (its neighbours
// were received by different sessions and the earlier one was told to
// end), silent (not told), or lost (nothing received after it).
func (c realReport) measureGaps(f *plainFigures, p int, seqs []int, problem func(string, ...any)) {
	name := c.Kind + "/" + c.Transport
	session := map[int]int{} // sequence -> session that received it
	var got []int
	maxSeen := -1
	for i, k := range c.Keys {
		if k[0] != p {
			continue
		}
		if _, dup := session[k[1]]; dup {
			f.dup++
			problem("%s %s received p%d s%d twice", name, c.First, p, k[1])
			continue
		}
		if k[1] < maxSeen {
			f.reordered++
			problem("%s %s received p%d s%d after s%d", name, c.First, p, k[1], maxSeen)
		}
		maxSeen = max(maxSeen, k[1])
		session[k[1]] = c.Sessions[i]
		got = append(got, k[1])
	}
	slices.Sort(got)
	if len(got) == 0 {
		return
	}
	for _, s := range seqs {
		if _, ok := session[s]; ok || s < got[0] {
			continue // received, or published before the client subscribed
		}
		i, _ := slices.BinarySearch(got, s)
		if i == len(got) {
			last := session[got[len(got)-1]]
			if slices.ContainsFunc(c.Told, func(tl realTold) bool { return tl.Session >= last && c.Handshakes > tl.Session }) {
				f.missedTold++ // its session ended after its last delivery, and it was told
				continue
			}
			f.lost++
			problem("%s %s never received p%d s%d (its last is s%d)", name, c.First, p, s, got[len(got)-1])
			continue
		}
		before, after := session[got[i-1]], session[got[i]]
		told := slices.ContainsFunc(c.Told, func(tl realTold) bool { return tl.Session >= before && tl.Session < after })
		if told {
			f.missedTold++
			continue
		}
		f.silent++
		if _, ok := f.firstGap[c.First]; !ok {
			f.firstGap[c.First] = gapAt{p, got[i-1], got[i]}
		}
		problem("%s %s: silent gap: p%d s%d not received (on the wire: %v), between s%d (session %d) and s%d (session %d), not told",
			name, c.First, p, s, slices.Contains(c.Wire, [2]int{p, s}), got[i-1], before, got[i], after)
	}
}

// lateConnectRE reads how long after its first attempt a Faye client
// got a connect reply (interop/chaos/real-clients.mjs, traceConnects).
var lateConnectRE = regexp.MustCompile(`in  connect .*; (\d+) ms after the last out`)

// logLateConnects logs the trace of every client that got a connect
// reply more than 1.2 x the advised timeout (12 s) after it sent the
// connect (diagnosis: its trace tells the attempts and failures between).
func logLateConnects(t *testing.T, reps []realReport) {
	for _, c := range reps {
		for _, l := range c.Trace {
			m := lateConnectRE.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			if ms, _ := strconv.Atoi(m[1]); ms > 12000 {
				t.Logf("%s/%s %s -> %s: a connect answered %d ms after it was sent; its last connects:\n  %s", c.Kind, c.Transport, c.First, c.Last, ms, strings.Join(c.Trace, "\n  "))
				break
			}
		}
	}
}
