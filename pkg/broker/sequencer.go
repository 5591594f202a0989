package broker

import (
	"context"
	"sync"
	"time"
)

// sequencer puts a session's messages back into the order its client sent
// them when they arrive on concurrent requests.
//
// Why: a client may have several long-polling or callback-polling requests
// in flight at once (Faye flushes a POST every 2 KB with no limit on
// parallel requests), and requests on different connections reach the
// server in no defined order. Every Bayeux client numbers the messages of
// a session from one increasing counter (CometD in decimal, Faye in base
// 36), so the server can tell that message 15 must wait for 14.
//
// Ordering is on for a session whose handshake id is a counter, and turns
// off for good the first time a gap does not fill within the window (the
// client's ids are then not a gap-free counter): a client with other ids
// waits at most once.
//
// Contract: every message of a request is announced with Arrive when the
// request comes in; then, message by message, Await(id) blocks the calling
// request (its own goroutine; no goroutine is started) until every message
// numbered below id has been Done, or until a deadline passes; then the
// caller processes the message and calls Done(id). The deadline depends
// on the gap: a gap with a message that has not arrived (its request is
// still on its way) is skipped at the deadline, which the broker sets to
// the waiting message's arrival time plus Config.ReorderWindow; a gap
// whose messages all arrived (they are being processed, or wait their turn
// in their own request, which a loaded machine may take longer than the
// window to get to) is waited for until the later deadline, at most
// reorderArrivedWait windows: skipping it would process the waiting
// message before messages already here, out of order for a reason that
// says nothing about the client's ids. A skipped gap lets the waiting
// message proceed, and a late message below the skipped point is processed
// when it arrives. (A late publish is refused: Stale, Late.) Ids that are not numbers (some clients use UUIDs) are
// not ordered. So no message waits longer than its later deadline.
//
// The base of the ids is learnt per session: decimal until an id with a
// letter is seen, base 36 from then on (ids 1 to 9 read the same in both);
// on the switch the state restarts from that id.
//
// Concurrency: safe for concurrent use. Memory: at most maxAhead ids above
// the next expected one are remembered as done, and as many as arrived;
// beyond that the state restarts (ordering is then best effort for that
// moment, never a stall), or an arrival is not remembered (its gap is then
// waited for until the earlier deadline only).
type sequencer struct {
	mu      sync.Mutex
	off     bool // not ordered: the ids are not a counter
	base36  bool
	long    bool                // a decimal id of more than one digit was read
	next    uint64              // lowest id not yet done; 0 = nothing seen yet
	ahead   map[uint64]struct{} // ids above next already done
	arrived map[uint64]struct{} // ids at or above next that arrived, not yet done
	wake    chan struct{}       // closed (and replaced) whenever next moves
	high    uint64              // highest id processed (see Stale), ordered or not
	steps   uint8               // ids processed one above high, up to countingSteps (see Late)
	// skipLo and skipHi: the ids in [skipLo, skipHi) are the gap whose
	// skip turned ordering off (the messages after them went on without
	// them after a window); empty if none.
	skipLo, skipHi uint64
}

// countingSteps is how many ids one above the highest processed a session
// must show before its ids count as a counter (Late): two, so that
// clients with random numeric or hexadecimal ids (which parse as numbers)
// are not taken for counting ones.
const countingSteps = 2

// reorderArrivedWait is how many reorder windows a message waits for a gap
// whose messages all arrived (see the contract). It bounds the wait should
// they never be done, as when two requests each wait for a message of the
// other (ids not increasing within a request).
const reorderArrivedWait = 5

// maxAhead bounds the ids remembered above the next expected one, and
// maxGap how far ahead an id may be to wait for the ones before it: a
// client has at most that many messages in flight (Faye: about 20 per
// 2 KB request). An id further ahead restarts the state.
const (
	maxAhead = 4096
	maxGap   = 1024
)

// parseLocked reads a Bayeux message id (raw JSON: a string or a number)
// as the client's counter. ok is false for ids that are not counters.
// switched reports that this id made the session's ids base 36.
func (q *sequencer) parseLocked(raw []byte) (n uint64, ok, switched bool) {
	id, quoted := raw, false
	if len(id) >= 2 && id[0] == '"' && id[len(id)-1] == '"' {
		id, quoted = id[1:len(id)-1], true
	}
	if len(id) == 0 || len(id) > 12 { // 36^12 < 2^63: no overflow below
		return 0, false, false
	}
	letters := false
	for _, c := range id {
		switch {
		case c >= '0' && c <= '9':
		case c >= 'a' && c <= 'z' && quoted:
			letters = true
		default:
			return 0, false, false
		}
	}
	if letters && !q.base36 {
		q.base36 = true
		// Ids of one digit read the same in both bases: only a state
		// built on longer decimal ids must restart.
		switched = q.long
	}
	if len(id) > 1 && !q.base36 {
		q.long = true
	}
	base := uint64(10)
	if q.base36 {
		base = 36
	}
	for _, c := range id {
		d := uint64(c - '0')
		if c >= 'a' {
			d = uint64(c-'a') + 10
		}
		n = n*base + d
	}
	return n, n > 0, switched
}

// Start records the id of the session's handshake: the next message is
// expected right after it. A handshake whose id is not a counter turns
// ordering off for the session. (A session that never saw Start, one
// adopted from another node, starts from the first counter it sees.)
// base36 tells that the client numbers in base 36 from the start: Faye and
// the clients built on it (jsforce, sfdx-faye) send no minimumVersion in
// their handshake, CometD's clients do; without it, a digits-only Faye id
// such as "10" (36) arriving before any id with a letter would read as
// decimal.
func (q *sequencer) Start(id []byte, base36 bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.base36 = base36
	if n, ok, _ := q.parseLocked(id); ok {
		q.resetLocked(n + 1)
	} else {
		q.off = true
	}
}

func (q *sequencer) resetLocked(next uint64) {
	q.next = next
	clear(q.ahead)
	for n := range q.arrived {
		if n < next {
			delete(q.arrived, n)
		}
	}
	q.wakeLocked()
}

// Arrive records that the message numbered id has reached the server: a
// message waiting for it waits until it is done (up to the later
// deadline), not only until the earlier one. Await learns the base of the
// ids: an id that would change it is not recorded.
func (q *sequencer) Arrive(id []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.off || q.next == 0 {
		return
	}
	base36, long := q.base36, q.long
	n, ok, switched := q.parseLocked(id)
	q.base36, q.long = base36, long
	if !ok || switched || n < q.next || n > q.next+maxGap || len(q.arrived) >= maxAhead {
		return
	}
	if q.arrived == nil {
		q.arrived = make(map[uint64]struct{})
	}
	q.arrived[n] = struct{}{}
}

// gapArrivedLocked reports whether every message from next to below n has
// arrived (or is done).
func (q *sequencer) gapArrivedLocked(n uint64) bool {
	for i := q.next; i < n; i++ {
		_, arrived := q.arrived[i]
		_, done := q.ahead[i]
		if !arrived && !done {
			return false
		}
	}
	return true
}

func (q *sequencer) wakeLocked() {
	if q.wake != nil {
		close(q.wake)
		q.wake = nil
	}
}

// Await blocks until the message numbered id may be processed (see the
// type's contract): a gap with a message that has not arrived is skipped
// at deadline, one whose messages all arrived at arrivedDeadline. It
// returns the number to pass to Done and whether the message is ordered at
// all; skipped reports that a deadline passed with a gap unfilled.
func (q *sequencer) Await(ctx context.Context, id []byte, deadline, arrivedDeadline time.Time) (n uint64, ordered, skipped bool) {
	q.mu.Lock()
	if q.off {
		q.mu.Unlock()
		return 0, false, false
	}
	n, ok, switched := q.parseLocked(id)
	if !ok {
		q.mu.Unlock()
		return 0, false, false
	}
	if q.next == 0 && !switched && n < q.high {
		// Sent before an id the session processed elsewhere (it moved
		// here since): it must not become where ordering starts, or the
		// next id would wait for the ones the other node processed.
		q.mu.Unlock()
		return 0, false, false
	}
	if q.next == 0 || switched || n > q.next+maxGap {
		q.resetLocked(n) // a first id, or one too far ahead to be in flight
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	late := false // the earlier deadline passed with the gap all arrived
	for n > q.next && !q.off {
		if q.wake == nil {
			q.wake = make(chan struct{})
		}
		wake := q.wake
		q.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(time.Until(deadline))
		}
		select {
		case <-wake:
			q.mu.Lock()
		case <-timer.C:
			q.mu.Lock()
			if n > q.next && !late && q.gapArrivedLocked(n) {
				// Everything before n is here, only slow: wait for it.
				late = true
				timer.Reset(time.Until(arrivedDeadline))
				continue
			}
			if n > q.next {
				// The gap did not fill: this client's ids are not a
				// gap-free counter (or a request was lost). Skip it, and
				// stop ordering the session so that it never waits again.
				q.skipLo, q.skipHi = q.next, n
				q.resetLocked(n)
				q.off, skipped = true, true
			}
		case <-ctx.Done():
			q.mu.Lock()
			q.mu.Unlock()
			return n, true, false
		}
	}
	q.mu.Unlock()
	return n, true, skipped
}

// Stop ends ordering for good and lets every waiting message go at once:
// the session ended (or moved to another node, which the messages it
// waits for now reach), so no gap will fill here.
func (q *sequencer) Stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.off = true
	q.wakeLocked()
}

// Done marks message n as processed, letting the messages after it go.
func (q *sequencer) Done(n uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.arrived, n)
	switch {
	case n == 0 || n < q.next:
		return // late (its gap was skipped) or a retry
	case n > q.next:
		if q.ahead == nil {
			q.ahead = make(map[uint64]struct{})
		}
		if len(q.ahead) >= maxAhead {
			q.resetLocked(n + 1)
			return
		}
		q.ahead[n] = struct{}{}
		return
	}
	q.next++
	for {
		if _, ok := q.ahead[q.next]; !ok {
			break
		}
		delete(q.ahead, q.next)
		q.next++
	}
	q.wakeLocked()
}

// Mark returns what Stale knows of the client's counter: the highest id
// processed (0: none) and whether ids are read in base 36. It is kept in
// the session's record (SessionState.Seen) so that the node that adopts
// the session knows it too (Resume).
func (q *sequencer) Mark() (high uint64, base36 bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.high, q.base36
}

// Resume gives an adopted session's sequencer what Stale knew on the node
// the session came from (Mark): a message sent before the session moved
// that reaches this node afterwards (it sat in a node that was frozen, or
// in a socket its client gave up on) is stale here too. Ordering still
// starts from the first id that is not stale (Await).
func (q *sequencer) Resume(high uint64, base36 bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if high <= q.high {
		return
	}
	q.high, q.base36 = high, base36
	q.long = q.long || (!base36 && high > 9)
}

// Stale records that the message numbered id is being processed and
// reports whether the session already processed a later one: the message
// was sent before it and arrived after it, late (it sat in a node that
// was frozen, or in a connection its client gave up on). Unlike Await it
// works whether or not the session is ordered. Ids that are not counters
// are never stale.
func (q *sequencer) Stale(id []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	n, ok, switched := q.parseLocked(id)
	switch {
	case !ok:
		return false
	case switched || n >= q.high:
		if n == q.high+1 && !switched && q.steps < countingSteps {
			q.steps++
		}
		q.high = n
		return false
	}
	return true
}

// Late reports, for a message Stale found stale, whether it is certainly
// late: sent before the later one processed and held up past the reorder
// window (it sat in a frozen node, or in a connection its client gave up
// on). That is so when the client has been seen to number its messages
// with a counter (countingSteps ids one above the highest processed) and
// either the session is still ordered (every message below the next
// expected one was done in order, so a stale one never took part) or
// the message is one of the gap whose skip turned ordering off. A stale
// publish that is late is refused, not delivered out of its publisher's
// order (Broker.processMessage). Other stale messages of a session no
// longer ordered are only concurrent requests done as they came.
func (q *sequencer) Late(id []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.steps < countingSteps {
		return false
	}
	if !q.off {
		return true
	}
	base36, long := q.base36, q.long
	n, ok, switched := q.parseLocked(id)
	q.base36, q.long = base36, long
	return ok && !switched && n >= q.skipLo && n < q.skipHi
}
