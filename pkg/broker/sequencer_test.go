package broker

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

func TestSequencerParse(t *testing.T) {
	tests := []struct {
		ids  []string // raw JSON ids, in order
		want []uint64 // 0: not ordered
	}{
		{[]string{`"1"`, `"9"`, `"10"`, `"11"`}, []uint64{1, 9, 10, 11}},            // CometD: decimal
		{[]string{`"1"`, `"9"`, `"a"`, `"z"`, `"10"`}, []uint64{1, 9, 10, 35, 36}},  // Faye: base 36 once a letter is seen
		{[]string{`7`, `"x-1"`, `""`, `"A"`, `null`}, []uint64{7, 0, 0, 0, 0}},      // numbers count; others are not counters
		{[]string{`"0"`, `"1234567890123"`, `"12"`}, []uint64{0, 0, 12}},            // zero and too long are not counters
		{[]string{`"550e8400-e29b-41d4-a716-446655440000"`, `"3"`}, []uint64{0, 3}}, // UUID ids
	}
	for i, tc := range tests {
		var q sequencer
		for j, id := range tc.ids {
			q.mu.Lock()
			n, ok, _ := q.parseLocked([]byte(id))
			q.mu.Unlock()
			if !ok {
				n = 0
			}
			if n != tc.want[j] {
				t.Errorf("case %d: id %s read as %d, want %d", i, id, n, tc.want[j])
			}
		}
	}
}

func quoted(n int, base int) []byte {
	return []byte(strconv.Quote(strconv.FormatInt(int64(n), base)))
}

// TestSequencerOrdersConcurrentRequests: ten "requests" carrying 20
// messages each reach the sequencer in reverse order, each on its own
// goroutine (as concurrent HTTP requests do); the messages are processed
// in the order of their ids, without any waiting out the window.
func TestSequencerOrdersConcurrentRequests(t *testing.T) {
	for _, base := range []int{10, 36} {
		t.Run("base"+strconv.Itoa(base), func(t *testing.T) {
			// The handshake: message 1 for CometD (decimal), message 35
			// ("z") for Faye, whose base shows in its letters. (Before a
			// letter is seen, a digits-only Faye id such as "10" reads as
			// decimal: ordering is then best effort until the first letter.)
			first := 1
			if base == 36 {
				first = 35
			}
			var q sequencer
			q.Start(quoted(first, base), false)
			var mu sync.Mutex
			var got []uint64
			var wg sync.WaitGroup
			start := time.Now()
			deadline := start.Add(10 * time.Second)
			for req := 9; req >= 0; req-- {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 20; i++ {
						id := first + 1 + req*20 + i
						n, ordered, skipped := q.Await(context.Background(), quoted(id, base), deadline, deadline)
						if !ordered || skipped {
							t.Errorf("id %d: ordered %v skipped %v", id, ordered, skipped)
						}
						mu.Lock()
						got = append(got, n)
						mu.Unlock()
						q.Done(n)
					}
				}()
			}
			wg.Wait()
			for i, n := range got {
				if n != uint64(first+1+i) {
					t.Fatalf("processed out of order at %d: %v", i, got)
				}
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("took %v: waited out the window instead of being woken", d)
			}
		})
	}
}

// TestSequencerSkipsGapAtDeadline: a message whose predecessor never comes
// waits until its deadline, not longer, then goes; the predecessor, if it
// arrives after all, goes at once.
func TestSequencerSkipsGapAtDeadline(t *testing.T) {
	var q sequencer
	q.Start([]byte(`"1"`), false)
	window := 50 * time.Millisecond
	start := time.Now()
	n, ordered, skipped := q.Await(context.Background(), []byte(`"3"`), start.Add(window), start.Add(window))
	if !ordered || !skipped || n != 3 {
		t.Fatalf("got n=%d ordered=%v skipped=%v, want 3 true true", n, ordered, skipped)
	}
	if d := time.Since(start); d < window {
		t.Fatalf("went after %v, before the deadline of %v", d, window)
	}
	q.Done(n)
	lateStart := time.Now()
	if _, _, skipped := q.Await(context.Background(), []byte(`"2"`), time.Now().Add(time.Hour), time.Now().Add(time.Hour)); skipped {
		t.Fatal("late message reported as skipping")
	}
	if d := time.Since(lateStart); d > time.Second {
		t.Fatalf("late message waited %v", d)
	}
	// The next in order still goes at once.
	if _, _, skipped := q.Await(context.Background(), []byte(`"4"`), time.Now().Add(time.Hour), time.Now().Add(time.Hour)); skipped {
		t.Fatal("message after the gap skipped")
	}
}

// TestSequencerContextEnds: a waiting message returns when its request's
// context ends.
func TestSequencerContextEnds(t *testing.T) {
	var q sequencer
	q.Start([]byte(`"1"`), false)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		q.Await(ctx, []byte(`"5"`), time.Now().Add(time.Hour), time.Now().Add(time.Hour))
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Await did not return after its context ended")
	}
}

// TestSequencerStopReleasesWaiters: a message waiting for an earlier one
// goes at once when the sequencer stops (its session ended or moved to
// another node, where the earlier message went), not at its deadline; and
// nothing waits after.
func TestSequencerStopReleasesWaiters(t *testing.T) {
	var q sequencer
	q.Start([]byte(`"1"`), false)
	done := make(chan bool)
	go func() {
		_, _, skipped := q.Await(context.Background(), []byte(`"5"`), time.Now().Add(time.Hour), time.Now().Add(time.Hour))
		done <- skipped
	}()
	// The waiter is parked on the gap 2..4 (poll until it is).
	for deadline := time.Now().Add(10 * time.Second); ; {
		q.mu.Lock()
		waiting := q.wake != nil
		q.mu.Unlock()
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Await never waited")
		}
		time.Sleep(time.Millisecond)
	}
	q.Stop()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Await did not return after Stop")
	}
	start := time.Now()
	if _, ordered, _ := q.Await(context.Background(), []byte(`"9"`), time.Now().Add(time.Hour), time.Now().Add(time.Hour)); ordered || time.Since(start) > time.Second {
		t.Errorf("after Stop: ordered=%v, waited %v; want not ordered, no wait", ordered, time.Since(start))
	}
}

// TestSequencerBounded: ids far ahead never make the state grow beyond
// maxAhead.
func TestSequencerBounded(t *testing.T) {
	var q sequencer
	q.Start([]byte(`"1"`), false)
	for i := 0; i < 3*maxAhead; i++ {
		q.Done(uint64(10 + i))
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.ahead) > maxAhead {
		t.Fatalf("%d ids remembered, bound %d", len(q.ahead), maxAhead)
	}
}

// TestSequencerTurnsOff: a session whose handshake id is not a counter is
// never ordered; one whose gap does not fill waits once, then never again;
// an id too far ahead to be in flight does not wait.
func TestSequencerTurnsOff(t *testing.T) {
	var labelled sequencer
	labelled.Start([]byte(`"H"`), false)
	if _, ordered, _ := labelled.Await(context.Background(), []byte(`"5"`), time.Now().Add(time.Hour), time.Now().Add(time.Hour)); ordered {
		t.Fatal("a session whose handshake id is not a counter is ordered")
	}

	var q sequencer
	q.Start([]byte(`"1"`), false)
	if _, _, skipped := q.Await(context.Background(), []byte(`"4"`), time.Now().Add(20*time.Millisecond), time.Now().Add(20*time.Millisecond)); !skipped {
		t.Fatal("gap not skipped at the deadline")
	}
	start := time.Now()
	if _, ordered, _ := q.Await(context.Background(), []byte(`"9"`), time.Now().Add(time.Hour), time.Now().Add(time.Hour)); ordered {
		t.Fatal("still ordered after a skipped gap")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("waited %v after ordering turned off", d)
	}

	var far sequencer
	far.Start([]byte(`"1"`), false)
	start = time.Now()
	n, ordered, skipped := far.Await(context.Background(), quoted(2+maxGap+1, 10), time.Now().Add(time.Hour), time.Now().Add(time.Hour))
	if !ordered || skipped || n != 2+maxGap+1 {
		t.Fatalf("far id: n=%d ordered=%v skipped=%v", n, ordered, skipped)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("far id waited %v", d)
	}
}

// BenchmarkSequencer is the cost a session's message pays for ordering
// when its ids arrive in order (the common case).
func BenchmarkSequencer(b *testing.B) {
	var q sequencer
	q.Start([]byte(`"1"`), false)
	ids := make([][]byte, 4096)
	for i := range ids {
		ids[i] = []byte(strconv.Quote(strconv.Itoa(i + 2)))
	}
	deadline := time.Now().Add(time.Hour)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%len(ids) == 0 && i > 0 {
			q.Start([]byte(`"1"`), false)
		}
		n, _, _ := q.Await(context.Background(), ids[i%len(ids)], deadline, deadline)
		q.Done(n)
	}
}

// BenchmarkSequencerArrive is the ordering cost per message on the path
// the broker takes with a reorder window (Config.ReorderWindow > 0, see
// Broker.process): every message of a request is announced with Arrive
// when the request comes in, then awaited and done one by one. Requests
// carry 8 messages. "in order": the requests arrive in id order. "out of
// order": within each group of 4 requests (32 ids) they arrive in reverse,
// so the Arrives of all but the group's last-arriving request record ids
// above the next expected one, and every gap fills within the window. The
// messages are then processed in id order, as Await makes them. One op is
// one message. What is not measured: the goroutine wake-up a request pays
// when its Await does block (here no Await blocks: one goroutine runs the
// requests in the order the sequencer lets them through).
func BenchmarkSequencerArrive(b *testing.B) {
	const perRequest, perGroup = 8, 4
	const group = perRequest * perGroup
	ids := make([][]byte, 4096) // a multiple of group
	for i := range ids {
		ids[i] = []byte(strconv.Quote(strconv.Itoa(i + 2)))
	}
	for _, tc := range []struct {
		name    string
		arrival []int // the order the group's requests arrive in
	}{
		{"in order", []int{0, 1, 2, 3}},
		{"out of order within the window", []int{3, 2, 1, 0}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var q sequencer
			q.Start([]byte(`"1"`), false)
			ctx := context.Background()
			var deadline time.Time // of the group's requests: no Await should wait for it
			b.ReportAllocs()
			next := 0 // index in ids of the next message to process
			for b.Loop() {
				if next%group == 0 {
					if next == len(ids) {
						q.Start([]byte(`"1"`), false)
						next = 0
					}
					deadline = time.Now().Add(time.Second)
					for _, r := range tc.arrival {
						for _, id := range ids[next+r*perRequest : next+(r+1)*perRequest] {
							q.Arrive(id)
						}
					}
				}
				n, ordered, skipped := q.Await(ctx, ids[next], deadline, deadline)
				if !ordered || skipped || n != uint64(next+2) {
					b.Fatalf("message %d: n=%d ordered=%v skipped=%v", next+2, n, ordered, skipped)
				}
				q.Done(n)
				next++
			}
		})
	}
}

// TestSequencerFayeDigitsFirst: a Faye session (base 36 from its
// handshake) whose request of digits-only ids ("10".."19": 36..45) arrives
// before the one with the ids that have letters still waits for them.
func TestSequencerFayeDigitsFirst(t *testing.T) {
	var q sequencer
	q.Start([]byte(`"1"`), true)
	var mu sync.Mutex
	var got []uint64
	var wg sync.WaitGroup
	run := func(from, to int) {
		defer wg.Done()
		for i := from; i <= to; i++ {
			n, ordered, skipped := q.Await(context.Background(), quoted(i, 36), time.Now().Add(10*time.Second), time.Now().Add(10*time.Second))
			if !ordered || skipped {
				t.Errorf("id %d: ordered %v skipped %v", i, ordered, skipped)
			}
			mu.Lock()
			got = append(got, n)
			mu.Unlock()
			q.Done(n)
		}
	}
	wg.Add(1)
	go run(36, 45) // "10".."19"
	deadline := time.Now().Add(5 * time.Second)
	for { // the digits-only request is waiting before the other arrives
		q.mu.Lock()
		waiting := q.wake != nil
		q.mu.Unlock()
		if waiting || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	wg.Add(1)
	go run(2, 35)
	wg.Wait()
	for i, n := range got {
		if n != uint64(2+i) {
			t.Fatalf("processed out of order at %d: %v", i, got)
		}
	}
}

// TestSequencerWaitsForArrivedPastWindow: a message whose predecessor has
// arrived, and is only slow to be processed (a loaded machine), waits for
// it past the reorder window rather than go first; up to the later
// deadline only, should it never be done.
func TestSequencerWaitsForArrivedPastWindow(t *testing.T) {
	for _, tc := range []struct {
		name     string
		doneAt   time.Duration // when message 2 is done (0: never)
		wantSkip bool
	}{
		{"predecessor done after the window", 300 * time.Millisecond, false},
		{"predecessor never done", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var q sequencer
			q.Start([]byte(`"1"`), false)
			q.Arrive([]byte(`"2"`))
			q.Arrive([]byte(`"3"`))
			start := time.Now()
			window, arrivedWait := 50*time.Millisecond, time.Second
			n2, _, _ := q.Await(context.Background(), []byte(`"2"`), start.Add(window), start.Add(arrivedWait))
			if tc.doneAt > 0 {
				time.AfterFunc(tc.doneAt, func() { q.Done(n2) })
			}
			n, ordered, skipped := q.Await(context.Background(), []byte(`"3"`), start.Add(window), start.Add(arrivedWait))
			d := time.Since(start)
			if n != 3 || !ordered || skipped != tc.wantSkip {
				t.Fatalf("got n=%d ordered=%v skipped=%v, want 3 true %v", n, ordered, skipped, tc.wantSkip)
			}
			switch {
			case !tc.wantSkip && d < tc.doneAt:
				t.Fatalf("went after %v, before its predecessor was done (%v)", d, tc.doneAt)
			case tc.wantSkip && d < arrivedWait:
				t.Fatalf("skipped after %v, before the later deadline (%v)", d, arrivedWait)
			}
		})
	}
}

// TestSequencerArriveKeepsBase: Arrive does not learn the base of the ids
// (Await does, and restarts the state on a switch): an id with a letter
// announced before any is awaited still restarts the state built on
// decimal ids.
func TestSequencerArriveKeepsBase(t *testing.T) {
	var q sequencer
	q.Start([]byte(`"10"`), false) // decimal, more than one digit
	q.Arrive([]byte(`"1a"`))
	start := time.Now()
	n, ordered, skipped := q.Await(context.Background(), []byte(`"1a"`), start.Add(time.Hour), start.Add(time.Hour))
	if !ordered || skipped || n != 46 || time.Since(start) > time.Second {
		t.Fatalf("got n=%d ordered=%v skipped=%v after %v, want 46 at once", n, ordered, skipped, time.Since(start))
	}
}

// slowFirst is an extension that holds the publish whose id is first for
// slow (as a loaded server may), and records the order in which publishes
// leave it for the engine.
type slowFirst struct {
	first   string
	slow    time.Duration
	entered chan struct{}
	mu      sync.Mutex
	order   []string
}

func (x *slowFirst) Incoming(_ context.Context, _ *Session, m *protocol.Message) *protocol.Error {
	if protocol.IsMeta(m.Channel) {
		return nil
	}
	if string(m.ID) == x.first {
		close(x.entered)
		time.Sleep(x.slow)
	}
	x.mu.Lock()
	x.order = append(x.order, string(m.ID))
	x.mu.Unlock()
	return nil
}

func (x *slowFirst) Outgoing(context.Context, *Session, *protocol.Message, *protocol.Reply) {}

// TestReorderWaitsForSlowEarlierPublish: a publish sent on a second request
// while the client's previous one is still being processed, for longer
// than the reorder window, goes after it, not first.
func TestReorderWaitsForSlowEarlierPublish(t *testing.T) {
	const window = 100 * time.Millisecond
	x := &slowFirst{first: `"2"`, slow: 4 * window, entered: make(chan struct{})}
	tb := newTestBroker(t, func(c *Config) { c.ReorderWindow, c.Extensions = window, []Extension{x} })
	hs := post(t, nil, tb.url, []msg{{"id": "1", "channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}}})
	cid, _ := hs.Msgs[0]["clientId"].(string)
	if cid == "" {
		t.Fatalf("handshake: %s", hs.Body)
	}
	pub := func(id string) httpResult {
		return post(t, nil, tb.url, []msg{{"id": id, "channel": "/order/a", "clientId": cid, "data": msg{"id": id}}})
	}
	var wg sync.WaitGroup
	wg.Go(func() { pub("2") })
	<-x.entered
	if r := pub("3"); len(r.Msgs) != 1 || r.Msgs[0]["successful"] != true {
		t.Fatalf("publish 3: %s", r.Body)
	}
	wg.Wait()
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.order) != 2 || x.order[0] != `"2"` {
		t.Fatalf("publishes went on in the order %v, want 2 then 3", x.order)
	}
}

// TestSequencerStale: a message numbered below one already processed is
// stale (it arrived late), whether or not the session is ordered; ids
// that are not counters never are.
func TestSequencerStale(t *testing.T) {
	tests := []struct {
		name string
		off  bool     // ordering turned off (a gap was skipped)
		ids  []string // raw JSON ids, in processing order
		want []bool
	}{
		{"in order", false, []string{`"3"`, `"4"`, `"5"`}, []bool{false, false, false}},
		{"late connect", false, []string{`"3"`, `"9"`, `"5"`, `"10"`}, []bool{false, false, true, false}},
		{"late after ordering turned off", true, []string{`"20"`, `"12"`}, []bool{false, true}},
		{"retry of the same id", false, []string{`"4"`, `"4"`}, []bool{false, false}},
		{"not counters", false, []string{`"9"`, `"x-1"`, `"550e8400-e29b"`}, []bool{false, false, false}},
		{"Faye base 36", false, []string{`"a"`, `"b"`, `"9"`, `"c"`}, []bool{false, false, true, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := sequencer{off: tc.off}
			for i, id := range tc.ids {
				if got := q.Stale([]byte(id)); got != tc.want[i] {
					t.Errorf("id %s: stale %v, want %v", id, got, tc.want[i])
				}
			}
		})
	}
}

// TestSequencerResume: an adopted session's sequencer, given what the
// previous owner's knew (Mark, Resume), finds the ids below it stale; a
// stale first id does not become where ordering starts, so the next id
// does not wait for the ones the previous owner processed.
func TestSequencerResume(t *testing.T) {
	tests := []struct {
		name   string
		high   uint64
		base36 bool
		ids    []string
		want   []bool
	}{
		{"nothing known", 0, false, []string{`"5"`, `"6"`}, []bool{false, false}},
		{"late connect", 13, false, []string{`"11"`, `"13"`, `"14"`}, []bool{true, false, false}},
		{"Faye base 36", 36, true, []string{`"z"`, `"10"`, `"11"`}, []bool{true, false, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var from sequencer
			from.Resume(tc.high, tc.base36)
			var q sequencer
			q.Resume(from.Mark())
			for i, id := range tc.ids {
				if got := q.Stale([]byte(id)); got != tc.want[i] {
					t.Errorf("id %s: stale %v, want %v", id, got, tc.want[i])
				}
			}
		})
	}

	var q sequencer
	q.Resume(13, false)
	ctx := context.Background()
	now := time.Now()
	if _, ordered, _ := q.Await(ctx, []byte(`"11"`), now.Add(time.Hour), now.Add(time.Hour)); ordered {
		t.Error("stale id 11 ordered: ordering would start below the ids processed elsewhere")
	}
	q.Stale([]byte(`"11"`))
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, _, _ := q.Await(ctx, []byte(`"15"`), time.Now().Add(time.Hour), time.Now().Add(time.Hour))
		q.Done(n)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		q.Stop()
		t.Fatal("id 15 waited for ids the previous owner processed")
	}
}
