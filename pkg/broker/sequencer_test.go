package broker

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"
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
			var q sequencer
			q.Start(quoted(1, base)) // the handshake
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
						id := 2 + req*20 + i
						n, ordered, skipped := q.Await(context.Background(), quoted(id, base), deadline)
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
				if n != uint64(2+i) {
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
	q.Start([]byte(`"1"`))
	window := 50 * time.Millisecond
	start := time.Now()
	n, ordered, skipped := q.Await(context.Background(), []byte(`"3"`), start.Add(window))
	if !ordered || !skipped || n != 3 {
		t.Fatalf("got n=%d ordered=%v skipped=%v, want 3 true true", n, ordered, skipped)
	}
	if d := time.Since(start); d < window {
		t.Fatalf("went after %v, before the deadline of %v", d, window)
	}
	q.Done(n)
	lateStart := time.Now()
	if _, _, skipped := q.Await(context.Background(), []byte(`"2"`), time.Now().Add(time.Hour)); skipped {
		t.Fatal("late message reported as skipping")
	}
	if d := time.Since(lateStart); d > time.Second {
		t.Fatalf("late message waited %v", d)
	}
	// The next in order still goes at once.
	if _, _, skipped := q.Await(context.Background(), []byte(`"4"`), time.Now().Add(time.Hour)); skipped {
		t.Fatal("message after the gap skipped")
	}
}

// TestSequencerContextEnds: a waiting message returns when its request's
// context ends.
func TestSequencerContextEnds(t *testing.T) {
	var q sequencer
	q.Start([]byte(`"1"`))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		q.Await(ctx, []byte(`"5"`), time.Now().Add(time.Hour))
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Await did not return after its context ended")
	}
}

// TestSequencerBounded: ids far ahead never make the state grow beyond
// maxAhead.
func TestSequencerBounded(t *testing.T) {
	var q sequencer
	q.Start([]byte(`"1"`))
	for i := 0; i < 3*maxAhead; i++ {
		q.Done(uint64(10 + i))
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.ahead) > maxAhead {
		t.Fatalf("%d ids remembered, bound %d", len(q.ahead), maxAhead)
	}
}
