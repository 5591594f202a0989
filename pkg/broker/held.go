package broker

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// heldConnect is one /meta/connect from its arrival to its answer. It
// owns everything about it: the limits it counts while held (released
// once), its timeout, its registration with the session (the waiter), the
// test of whether it is due, and answer, the one place that decides its
// reply for every way it can end (deliveries, timeout, session end, a
// newer connect or a forward release, drain, lost ownership, the client
// gone). Transports hold it through connectHolder.
//
// Lock order: Session.mu, then heldConnect.mu; scheduling the holder
// (from the session, with its lock held) takes no lock.
type heldConnect struct {
	b         *Broker
	s         *Session
	m         *protocol.Message
	reply     *protocol.Reply
	w         *waiter
	timeout   time.Duration
	immediate bool // reply without holding
	pushed    bool // set by a holder that pushes deliveries itself (a websocket, not a forwarded websocket request): only a session that delivers in connect replies makes it due on deliveries

	browser lease // Broker.lim.browserHeld, while held
	ip      lease // Broker.lim.ipHeld, while held
	held    bool  // reported to the Observer as held until answered

	// holder and deadline are read lock-free on the delivery path (every
	// enqueue schedules the holder): holder is replaced as a whole, the
	// deadline (unix ns, 0 until held) is set once.
	holder   atomic.Pointer[holderRef]
	deadline atomic.Int64

	mu       sync.Mutex
	timer    *time.Timer // schedules the holder at deadline
	answered bool
}

// holderRef boxes a connectHolder for atomic replacement.
type holderRef struct{ h connectHolder }

// connectHolder is what a transport implements to hold a connect, in the
// manner of CometD's AbstractServerTransport.Scheduler: the heldConnect
// calls schedule when the connect may be due (woken by deliveries, ended,
// timed out); the holder then checks due and answers it (answer, or
// cancel when its client is gone) from a goroutine of its own. schedule
// must not block: it runs with Session.mu held.
type connectHolder interface{ schedule() }

// chanHolder is the holder of a goroutine that blocks while it holds the
// connect (the HTTP handler, the gRPC call of a forwarded request).
type chanHolder chan struct{}

func (c chanHolder) schedule() { signal(c) }

// hold makes h the connect's holder (the first call starts holding: the
// timeout runs from then on; a later one moves the connect to another
// holder). h is scheduled at once if the connect is already due.
func (hc *heldConnect) hold(h connectHolder) {
	hc.mu.Lock()
	if hc.answered {
		hc.mu.Unlock()
		return
	}
	first := hc.holder.Swap(&holderRef{h}) == nil
	if first && !hc.immediate {
		hc.deadline.Store(time.Now().Add(hc.timeout).UnixNano())
		// Set after the deadline: the timer cannot fire before it.
		hc.timer = time.AfterFunc(hc.timeout, hc.schedule)
	}
	hc.mu.Unlock()
	if first && !hc.s.watchWaiter(hc.w, hc) {
		h.schedule() // ended before it was watched
		return
	}
	if hc.due() {
		h.schedule()
	}
}

// schedule passes a wake-up (from the session or the timer) to the holder.
func (hc *heldConnect) schedule() {
	if r := hc.holder.Load(); r != nil {
		r.h.schedule()
	}
}

// kick is the session's kicker: deliveries arrived, or the wait ended.
func (hc *heldConnect) kick() { hc.schedule() }

// due reports whether the connect is to be answered now: it replies at
// once, its wait ended (replaced, session closed, shutdown), its deadline
// passed, or messages wait for it.
func (hc *heldConnect) due() bool {
	if hc.immediate {
		return true
	}
	select {
	case <-hc.w.done:
		return true
	default:
	}
	if d := hc.deadline.Load(); d != 0 && time.Now().UnixNano() >= d {
		return true
	}
	if hc.pushed {
		// Pushed deliveries do not end it; a session that delivers only in
		// connect replies (ack, replay) does.
		return hc.s.connectDue()
	}
	return hc.s.hasDeliveries()
}

// waitResult is how wait ended.
type waitResult uint8

const (
	waitDue  waitResult = iota // answer now
	waitIdle                   // d passed with nothing to send
	waitGone                   // ctx ended: the client went away
)

// wait holds the connect on the calling goroutine until it is due, ctx
// ends, or (d > 0) d passes.
func (hc *heldConnect) wait(ctx context.Context, d time.Duration) waitResult {
	if hc.due() {
		return waitDue
	}
	h := make(chanHolder, 1)
	hc.hold(h)
	var idle <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		idle = t.C
	}
	for {
		select {
		case <-h:
			if hc.due() {
				return waitDue
			}
		case <-idle:
			if hc.due() {
				return waitDue
			}
			return waitIdle
		case <-ctx.Done():
			return waitGone
		}
	}
}

// detach lets a connect that may be held for long keep only its own
// message, not the request buffer it was decoded from.
func (hc *heldConnect) detach() {
	hc.m = hc.m.Detached()
	hc.reply.ID = hc.m.ID
}

// cancel ends the connect without a reply: its client is gone, and queued
// messages wait for the next connect.
func (hc *heldConnect) cancel() { hc.answer(false) }

// answer ends the connect, once: it fills the reply and returns the
// deliveries to write before it (deliver=false: nothing is taken from the
// queue). drop reports that the debug API asked to lose this reply
// (debugFaults): the holder then loses it the way its transport can (a
// connection closed, a forwarded call failed). A second call returns
// nothing.
func (hc *heldConnect) answer(deliver bool) (pubs []*engine.Publication, drop bool) {
	hc.mu.Lock()
	if hc.answered {
		hc.mu.Unlock()
		return nil, false
	}
	hc.answered = true
	hc.holder.Store(nil)
	if hc.timer != nil {
		hc.timer.Stop()
	}
	hc.mu.Unlock()
	b := hc.b
	hc.browser.release()
	hc.ip.release()
	if hc.held {
		hc.held = false
		b.obs.HeldConnect(-1)
	}
	s, r := hc.s, hc.reply
	var reason waitEnd
	select {
	case <-hc.w.done:
		reason = hc.w.reason
	default:
	}
	if reason == endNone && b.shuttingDown.Load() {
		reason = endShutdown
	}
	// Without its lease this node delivers nothing (adopt_fence.go): the reply
	// tells the client to retry, and carries no batch id.
	fenced, withExt := deliver && b.fenced(), true
	switch reason {
	case endClosed:
		err := s.closedReason()
		if err == nil {
			err = unknownClient(s.id)
		}
		switch err {
		case errEnded:
			r.Fail(err)
			r.Advice = &protocol.Advice{Reconnect: protocol.ReconnectNone}
		case errMoved:
			r.Succeed()
			r.Advice = b.movedAdvice()
		default:
			r.Fail(err)
			r.Advice = &protocol.Advice{Reconnect: protocol.ReconnectHandshake, Interval: protocol.Int64(0)}
		}
		s.endConnect(hc.w, false)
	case endReplaced:
		r.Succeed()
		s.endConnect(hc.w, false)
	case endShutdown, endNone:
		r.Succeed()
		if reason == endShutdown {
			r.Advice = &protocol.Advice{Reconnect: protocol.ReconnectRetry, Interval: protocol.Int64(rand.Int64N(2000))}
		}
		if fenced {
			s.endConnect(hc.w, false)
			r.Advice, withExt = b.movedAdvice(), false
			break
		}
		pubs = s.endConnect(hc.w, deliver)
	}
	pubs, ok := b.persistBatch(s, r, pubs)
	withExt = withExt && ok
	drop = len(pubs) > 0 && b.faults.takeDrop(s.id)
	if withExt {
		// The extensions see which batch this reply carries: its id goes
		// with it whatever happened to the session meanwhile (a move that
		// began after the batch was saved still hands it over, unacked).
		if len(pubs) > 0 {
			s.setReplyBatch(s.LastBatch())
		}
		b.outgoing(context.Background(), s, hc.m, r)
		s.setReplyBatch(0)
	}
	b.observeReply(r)
	b.observeDelivered(pubs)
	return pubs, drop
}

// persistBatch makes the batch a connect reply is about to carry durable
// before it is written: if this node dies, the adopter knows what the
// client may acknowledge. It returns what to deliver and whether the
// reply may carry the extensions' fields (a batch id): not when the save
// was refused for want of the lease, in which case the batch is taken
// back into the queue and the client told to retry.
func (b *Broker) persistBatch(s *Session, r *protocol.Reply, pubs []*engine.Publication) ([]*engine.Publication, bool) {
	if len(pubs) == 0 || b.store == nil || !s.takeNewBatch() {
		return pubs, true
	}
	err := b.save(context.Background(), s)
	switch {
	case err == nil:
		return pubs, true
	case errors.Is(err, ErrOwnershipLost):
		r.Succeed()
		r.Advice = b.movedAdvice()
		return nil, true // the session ended here: no batch id
	case errors.Is(err, ErrFenced):
		s.retractBatch()
		r.Succeed()
		r.Advice = b.movedAdvice()
		return nil, false
	}
	b.log.Warn("batch state not persisted; delivering anyway", "session", s.id, "err", err)
	return pubs, true
}
