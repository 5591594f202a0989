package broker

import (
	"crypto/rand"
	"encoding/base32"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newSessionID returns prefix followed by 26 characters carrying 130 random
// bits (17 random bytes, 136 bits, truncated by the encoding to 26 chars).
func newSessionID(prefix string) string {
	var b [17]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return prefix + idEncoding.EncodeToString(b[:])[:26]
}

// Session is one Bayeux client session. Its exported methods are safe for
// concurrent use; extensions and service handlers use them.
type Session struct {
	id        string
	b         *Broker
	created   time.Time
	browserID string
	// Counted in Broker.lim while the session lives (released by
	// releaseLimits when it is removed).
	ipLease, browserLease lease
	info                  RequestInfo // of the handshake request

	subs atomic.Pointer[map[string]struct{}] // copy-on-write set of patterns

	attrs sync.Map // extension and application state

	mu         sync.Mutex
	queue      []*engine.Publication
	queueBytes int
	waiter     *waiter   // the held /meta/connect, if any
	push       kicker    // a websocket writer, if attached and not acked
	lastActive time.Time // end of the last request or held connect
	arrived    time.Time // when adopted here (zero: created here); see handOverTo
	closed     *protocol.Error
	transport  string

	connected bool // a /meta/connect has been seen

	ack       bool // deliveries only in numbered connect-reply batches
	implicit  bool // with ack: a connect acknowledges every earlier batch (replay without the ack extension)
	unacked   []ackBatch
	lastBatch int64
	// replyBatch: the batch the connect reply being answered carries
	// (held.answer sets it around the extensions' Outgoing).
	replyBatch int64
	// sameIDRetry: the client resends a /meta/connect whose reply it lost
	// with the same message id (Faye and the clients built on it, which
	// handshake without minimumVersion); see implicitAck.
	sameIDRetry bool

	// Cluster mode (Broker.store set): acked holds, per concrete channel,
	// the position up to which the client has everything (acknowledged in
	// acked mode, delivered otherwise); it is what adoption resumes from.
	acked   map[string]engine.Position
	durable map[string][]byte // extension state persisted with the session
	// While recovering (adopted, not yet caught up from history) live
	// publications wait in pending.
	recovering bool
	pending    []*engine.Publication
	// floor: per channel, the last publication queued from history by a
	// recovery; its live copy may still be on its way (Redis delivers the
	// pub/sub notice after the history append) and must be dropped. An
	// entry goes once a newer live publication passed it.
	floor map[string]engine.Position
	// lost: another node took the session over (its record no longer
	// names this node); it must not deliver any more.
	lost bool
	// adoptedGap: a plain session with subscriptions adopted from a record
	// that is not exact (its owner failed): what was published between
	// the failure and the adoption is gone, and its first connect here
	// tells the client (Broker.adoptionGap).
	adoptedGap bool
	// staleExact: adopted from an exact record (drain, hand-over) whose
	// positions stop being exact once this node delivers; a plain
	// session's record is rewritten (not exact) after its catch-up, so
	// that an adopter after this node's failure tells the client of the
	// gap instead of replaying what was delivered here.
	staleExact bool
	// newBatch: a batch was made since the last save (cluster mode).
	newBatch bool

	replay    atomic.Bool      // deliveries carry replay ids (replay extension)
	replayReq map[string]int64 // ext.replay of the subscribe being processed
	saveMu    sync.Mutex       // serializes snapshot+save to the SessionStore, and catch-up/replay; first in the lock order

	seq sequencer // the client's message order across concurrent requests

	tokens     float64   // publish token bucket
	tokensTime time.Time // last refill
}

// releaseLimits gives back the session's counts in Broker.lim; the
// broker calls it once, when it removes the session from its table.
func (s *Session) releaseLimits() {
	s.ipLease.release()
	s.browserLease.release()
}

// takeToken spends one publish token; false means the session is over its
// publish rate.
func (s *Session) takeToken(rate float64, burst int) bool {
	if rate < 0 {
		return true
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokensTime.IsZero() {
		s.tokens = float64(burst)
	} else {
		s.tokens = min(float64(burst), s.tokens+now.Sub(s.tokensTime).Seconds()*rate)
	}
	s.tokensTime = now
	if s.tokens < 1 {
		return false
	}
	s.tokens--
	return true
}

type ackBatch struct {
	id      int64
	pubs    []*engine.Publication
	end     map[string]engine.Position // cluster mode: where the batch reaches per channel
	connect string                     // the message id (raw JSON) of the /meta/connect that carried it; "" if none
}

// waiter is a held /meta/connect. wake is signalled (non-blocking, cap 1)
// when deliveries arrive; done is closed when the connect must end now, with
// reason telling why. notify (set under Session.mu with watchWaiter) is
// kicked on both, for a holder that waits without a goroutine.
type waiter struct {
	wake      chan struct{}
	done      chan struct{}
	reason    waitEnd
	notify    kicker
	connectID string // the held /meta/connect's message id (raw JSON), labels the batch it carries
}

// kicker is woken by a session that has something for it. kick must not
// block: it is called with Session.mu held.
type kicker interface{ kick() }

// wakeLocked signals w's wake channel and notifies its holder. s.mu held.
func (w *waiter) wakeLocked() {
	signal(w.wake)
	if w.notify != nil {
		w.notify.kick()
	}
}

// watchWaiter makes k be kicked when w is woken or ended. It reports false
// if w already ended (done is closed): the caller checks it itself.
func (s *Session) watchWaiter(w *waiter, k kicker) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-w.done:
		return false
	default:
	}
	w.notify = k
	return true
}

type waitEnd uint8

const (
	endNone     waitEnd = iota
	endReplaced         // a newer connect took over
	endClosed           // the session ended (see Session.closed)
	endShutdown         // the node is shutting down
)

func newSession(b *Broker, info RequestInfo, browserID string) *Session {
	now := time.Now()
	if info.Transport != protocol.WebSocket { // a websocket's header is kept already
		info.Header = b.keptHeader(info.Header)
	}
	s := &Session{id: newSessionID(b.cfg.IDPrefix), b: b, created: now, browserID: browserID, info: info, lastActive: now, transport: info.Transport}
	empty := map[string]struct{}{}
	s.subs.Store(&empty)
	if b.store != nil {
		s.acked = map[string]engine.Position{}
	}
	return s
}

// ID returns the clientId.
func (s *Session) ID() string { return s.id }

// Info returns the request information of the session's handshake.
func (s *Session) Info() RequestInfo { return s.info }

// Set stores an attribute on the session (extension or application state).
func (s *Session) Set(key, value any) { s.attrs.Store(key, value) }

// Get loads an attribute stored with Set.
func (s *Session) Get(key any) (any, bool) { return s.attrs.Load(key) }

// Subscriptions returns a snapshot of the session's subscription patterns.
func (s *Session) Subscriptions() []string {
	m := *s.subs.Load()
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func (s *Session) subscribed(pattern string) bool {
	_, ok := (*s.subs.Load())[pattern]
	return ok
}

// subscribedToAny reports whether any of patterns is in the set.
func (s *Session) subscribedToAny(patterns []string) bool {
	m := *s.subs.Load()
	for _, p := range patterns {
		if _, ok := m[p]; ok {
			return true
		}
	}
	return false
}

// setSub adds or removes pattern; it reports whether the set changed.
func (s *Session) setSub(pattern string, on bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.subs.Load()
	if _, ok := old[pattern]; ok == on {
		return false
	}
	next := maps.Clone(old)
	if on {
		next[pattern] = struct{}{}
	} else {
		delete(next, pattern)
	}
	s.subs.Store(&next)
	if !on {
		s.pruneAckedLocked()
	}
	return true
}

// pruneAcked drops the positions of the channels no subscription covers:
// positions are kept only for what adoption resumes.
func (s *Session) pruneAcked() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneAckedLocked()
}

func (s *Session) pruneAckedLocked() {
	subs := *s.subs.Load()
	for ch := range s.acked {
		if !covers(subs, ch) {
			delete(s.acked, ch)
		}
	}
}

// covers reports whether one of the patterns subs matches channel ch.
func covers(subs map[string]struct{}, ch string) bool {
	if _, ok := subs[ch]; ok {
		return true
	}
	for p := range subs {
		if channel.IsWildcard(p) && channel.Match(p, ch) {
			return true
		}
	}
	return false
}

// advanceLocked moves the session's position on ch to pos (cluster mode).
// A channel that has no position and that no subscription covers (its
// deliveries crossed an unsubscribe) gets none: see setSub.
func (s *Session) advanceLocked(ch string, pos engine.Position) {
	if _, ok := s.acked[ch]; !ok && !covers(*s.subs.Load(), ch) {
		return
	}
	advance(s.acked, ch, pos)
}

func (s *Session) subCount() int { return len(*s.subs.Load()) }

// EnableAck switches the session to acknowledged delivery: deliveries are
// made only in /meta/connect replies, in numbered batches kept until the
// client acknowledges them. Called by the ack extension at handshake.
func (s *Session) EnableAck() {
	s.mu.Lock()
	s.ack, s.implicit = true, false
	s.push = nil
	s.mu.Unlock()
}

// AckEnabled reports whether the ack extension's acknowledged delivery is
// on (the client sends ext.ack).
func (s *Session) AckEnabled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ack && !s.implicit
}

// Acknowledge drops the batches with id <= batch.
func (s *Session) Acknowledge(batch int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acknowledgeLocked(batch)
}

func (s *Session) acknowledgeLocked(batch int64) {
	i := 0
	for i < len(s.unacked) && s.unacked[i].id <= batch {
		for _, p := range s.unacked[i].pubs {
			s.queueBytes -= len(p.Payload)
		}
		for ch, pos := range s.unacked[i].end {
			s.advanceLocked(ch, pos)
		}
		i++
	}
	s.unacked = s.unacked[i:]
}

// LastBatch returns the id of the newest delivered batch.
func (s *Session) LastBatch() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastBatch
}

// ReplyBatch returns the id of the batch the /meta/connect reply being
// answered carries (0: none), for the extensions' Outgoing.
func (s *Session) ReplyBatch() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replyBatch
}

func (s *Session) setReplyBatch(id int64) {
	s.mu.Lock()
	s.replyBatch = id
	s.mu.Unlock()
}

// Deliver sends a message directly to this session only, on channel, with
// data (valid JSON). Service handlers use it to answer a publisher.
func (s *Session) Deliver(channel string, data []byte) {
	p := &engine.Publication{Channel: channel, Payload: protocol.AppendPublication(nil, channel, data, nil, nil)}
	s.enqueue(p)
}

// enqueue appends p to the queue and wakes the held connect or the websocket
// writer. A full queue terminates the session.
func (s *Session) enqueue(p *engine.Publication) { s.enqueueTo(p, nil) }

// enqueueTo is enqueue that, with kb set, leaves the writers to kick in kb
// (kicked by the caller once its locks are released) instead of kicking
// them here.
func (s *Session) enqueueTo(p *engine.Publication, kb *kickBatch) {
	s.mu.Lock()
	if s.closed != nil {
		s.mu.Unlock()
		return
	}
	pending := len(s.queue) + len(s.pending)
	for _, b := range s.unacked {
		pending += len(b.pubs)
	}
	if pending+1 > s.b.cfg.MaxQueueMessages || s.queueBytes+len(p.Payload) > s.b.cfg.MaxQueueBytes {
		s.closeLocked(protocol.NewError(protocol.CodeQueueOverflow, "Session queue overflow", s.id))
		s.mu.Unlock()
		s.b.metrics.queueOverflows.Add(1)
		s.b.obs.QueueOverflow()
		s.b.reap(s)
		return
	}
	if s.floor != nil {
		if f, ok := s.floor[p.Channel]; ok && p.Epoch == f.Epoch {
			if p.Offset <= f.Offset {
				s.mu.Unlock()
				return // already queued from history
			}
			delete(s.floor, p.Channel)
		}
	}
	s.queueBytes += len(p.Payload)
	if s.recovering {
		s.pending = append(s.pending, p)
		s.mu.Unlock()
		return
	}
	s.queue = append(s.queue, p)
	switch {
	case kb == nil:
		if s.waiter != nil {
			s.waiter.wakeLocked()
		}
		if s.push != nil {
			s.push.kick()
		}
	default:
		if w := s.waiter; w != nil {
			signal(w.wake)
			if w.notify != nil {
				kb.add(holderOf(w.notify))
			}
		}
		if s.push != nil {
			kb.add(s.push)
		}
	}
	s.mu.Unlock()
}

// kickBatch collects the writers a fanout wakes while it holds locks, to
// wake them after: a websocket with no writer running is then written to
// from the fanout's own goroutine (wsConn.flushInline), which saves
// starting a writer goroutine per message. Not safe for concurrent use.
type kickBatch struct {
	ks []kicker
	// seen, when set (a batch of publications: fanoutBatch), holds every
	// kicker in ks, so that each is recorded once per batch.
	seen map[kicker]struct{}
}

// add records k, once if added twice in a row (a session's push writer and
// its held connect's are the same socket), and once per batch with seen.
func (kb *kickBatch) add(k kicker) {
	if n := len(kb.ks); n > 0 && kb.ks[n-1] == k {
		return
	}
	if kb.seen != nil {
		if _, ok := kb.seen[k]; ok {
			return
		}
		kb.seen[k] = struct{}{}
	}
	kb.ks = append(kb.ks, k)
}

// holderOf returns, for a held connect, the transport that holds it when
// that is a kicker too (a websocket: the same writer as its pushes, which
// kickBatch then wakes once, inline), else k itself.
func holderOf(k kicker) kicker {
	if hc, ok := k.(*heldConnect); ok {
		if r := hc.holder.Load(); r != nil {
			if hk, ok := r.h.(kicker); ok {
				return hk
			}
		}
	}
	return k
}

// inlineFlusher is a kicker that can do the writer's work on the caller's
// goroutine, without blocking.
type inlineFlusher interface{ flushInline() }

// run wakes every recorded writer, inline where it can. Call it with no
// lock held.
func (kb *kickBatch) run() {
	for _, k := range kb.ks {
		if f, ok := k.(inlineFlusher); ok {
			f.flushInline()
		} else {
			k.kick()
		}
	}
	clear(kb.ks)
	kb.ks = kb.ks[:0]
	clear(kb.seen)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// closeLocked marks the session closed with reason and ends its held
// connect. The broker removes it from its maps (reap or removeSession).
func (s *Session) closeLocked(reason *protocol.Error) {
	if s.closed != nil {
		return
	}
	s.closed = reason
	s.queue, s.unacked, s.pending, s.queueBytes = nil, nil, nil, 0
	// Messages waiting for their order go now: no gap fills here any more
	// (a moved session's next messages reach its new owner).
	s.seq.Stop()
	if s.waiter != nil && reason != errDisconnected { // see Broker.disconnect
		s.endWaiterLocked(endClosed)
	}
	if s.push != nil {
		s.push.kick()
	}
}

func (s *Session) endWaiterLocked(reason waitEnd) {
	w := s.waiter
	s.waiter = nil
	w.reason = reason
	close(w.done)
	if w.notify != nil {
		w.notify.kick()
	}
}

// Ended reports whether the session ended on this node (closed, or moved
// to another node).
func (s *Session) Ended() bool { return s.closedReason() != nil }

// Moving reports whether the session is being moved to another node (it
// delivers nothing more here): its batch ids are no longer this node's to
// report (see ext.Ack).
func (s *Session) Moving() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// closedReason returns why the session ended, or nil while it lives.
func (s *Session) closedReason() *protocol.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// beginConnect installs a new held connect (message id connectID, raw
// JSON), ending any previous one.
func (s *Session) beginConnect(transport, connectID string) *waiter {
	w := &waiter{wake: make(chan struct{}, 1), done: make(chan struct{}), connectID: connectID}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.transport = transport
	if s.closed != nil {
		w.reason = endClosed
		close(w.done)
		return w
	}
	if s.waiter != nil {
		s.endWaiterLocked(endReplaced)
	}
	s.waiter = w
	if len(s.queue) > 0 || len(s.unacked) > 0 {
		signal(w.wake)
	}
	return w
}

// hasDeliveries reports whether a held connect should return now.
// connectDue reports whether the session delivers only in connect replies
// (acknowledged mode, explicit or implicit as with replay) and has
// something to deliver: its held connect is then to be answered. An
// implicit session's unacknowledged batches are acknowledged by its next
// connect, so they do not count.
func (s *Session) connectDue() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ack {
		return false
	}
	return len(s.queue) > 0 || (!s.implicit && len(s.unacked) > 0)
}

func (s *Session) hasDeliveries() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue) > 0 || len(s.unacked) > 0
}

// endConnect detaches w (if still current) and takes what it delivers. In
// acked mode the queue becomes a new batch and every unacked batch is
// resent (LastBatch is the id to report).
func (s *Session) endConnect(w *waiter, deliver bool) (pubs []*engine.Publication) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiter == w {
		s.waiter = nil
	}
	s.lastActive = time.Now()
	if s.closed != nil || !deliver || s.lost {
		return nil
	}
	if !s.ack {
		pubs = s.queue
		for _, p := range pubs {
			s.queueBytes -= len(p.Payload)
		}
		s.queue = nil
		s.deliveredLocked(pubs)
	} else {
		if len(s.queue) > 0 {
			s.lastBatch++
			s.unacked = append(s.unacked, ackBatch{id: s.lastBatch, pubs: s.queue, end: s.endOf(s.queue), connect: w.connectID})
			s.queue = nil
			s.newBatch = true
		}
		for _, b := range s.unacked {
			pubs = append(pubs, b.pubs...)
		}
	}
	return pubs
}

// takePushed drains the queue for a websocket push (not acked mode).
func (s *Session) takePushed(dst []*engine.Publication) []*engine.Publication {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ack || s.closed != nil || s.lost {
		return dst
	}
	s.deliveredLocked(s.queue)
	dst = append(dst, s.queue...)
	for _, p := range s.queue {
		s.queueBytes -= len(p.Payload)
	}
	clear(s.queue)
	s.queue = s.queue[:0]
	return dst
}

// attachPush registers a websocket writer, kicked when messages are queued;
// pushes are disabled in acked mode.
func (s *Session) attachPush(c kicker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ack {
		s.push = c
		if len(s.queue) > 0 {
			c.kick()
		}
	}
}

func (s *Session) detachPush(c kicker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.push == c {
		s.push = nil
	}
	s.lastActive = time.Now()
}

// markConnected records the first /meta/connect; it reports whether this
// was the first.
func (s *Session) markConnected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := !s.connected
	s.connected = true
	return first
}

// touch records activity.
func (s *Session) touch() {
	s.mu.Lock()
	s.lastActive = time.Now()
	s.mu.Unlock()
}

// expired reports whether the session has had no held connect for longer
// than maxInterval.
func (s *Session) expired(now time.Time, maxInterval func(lastActive time.Time) time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed != nil || (s.waiter == nil && now.Sub(s.lastActive) > maxInterval(s.lastActive))
}

// QueueLen returns the number of messages waiting (including unacked).
func (s *Session) QueueLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.queue)
	for _, b := range s.unacked {
		n += len(b.pubs)
	}
	return n
}
