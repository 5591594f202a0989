package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/internal/netpoll"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
	"github.com/bayeux-cluster/bayeux/pkg/broker/wsframe"
)

// Broker is a Bayeux server. Create it with New, start it with Run, mount it
// as an http.Handler, and stop it with Shutdown.
type Broker struct {
	cfg Config
	log *slog.Logger

	peerLostAt atomic.Int64 // unix ns of the last peer loss: the expiry grace (grace.go)

	eng engine.Engine
	idx *subIndex
	obs Observer // never nil: nopObserver when none is configured

	sessions *sessionTable // sessions, reaping, tombstones

	lim         limits        // per-address and per-browser counts
	limitWarned limitWarnings // when a per-address limit was last logged (iplimit.go)
	faults      debugFaults   // armed by the debug API only

	servicesMu sync.RWMutex
	services   map[string]ServiceHandler // by pattern

	router Router       // nil on a single node
	store  SessionStore // nil on a single node
	fence  Fence        // the store's, if leased (adopt_fence.go); nil otherwise

	lastRefresh time.Time   // sweeper goroutine only
	refreshing  atomic.Bool // a Refresh is running

	poller           *netpoll.Poller   // parks idle sockets without a goroutine
	lingering        atomic.Int32      // websocket writers waiting for more work (transport_ws.go)
	lingeringReaders atomic.Int32      // websocket readers waiting for more bytes (transport_ws.go)
	conns            connRegistry      // websockets and parked long-polls, for Shutdown
	reservers        netpoll.Reservers // serve connections handed back after a parked poll

	wsDeflate *wsframe.Deflate // websocket compression; nil: off (ws_deflate.go)

	shuttingDown atomic.Bool
	// draining ends (at Shutdown) the held connects this node forwards to
	// their owners, so that their HTTP requests and sockets can close.
	draining     context.Context
	stopForwards context.CancelFunc
	// connectMargin: past a forwarded connect's hold plus this, the
	// forwarding node answers it itself (forward_overdue.go).
	connectMargin time.Duration
	metrics       metrics
	supported     map[string]bool
}

type metrics struct {
	handshakes, connects, publishes, deliveries, queueOverflows, expired, gaps, adopted atomic.Int64
}

// Stats is a snapshot of the broker's counters.
type Stats struct {
	Sessions, Patterns                                                                  int
	Handshakes, Connects, Publishes, Deliveries, QueueOverflows, Expired, Gaps, Adopted int64
}

// New creates a Broker. It does not start background work: call Run.
func New(cfg Config) (*Broker, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	b := &Broker{
		poller:   netpoll.NewPoller(),
		cfg:      cfg,
		log:      cfg.Logger,
		eng:      cfg.Engine,
		obs:      cfg.Observer,
		idx:      newSubIndex(cfg.Engine),
		sessions: newSessionTable(),

		services:    map[string]ServiceHandler{},
		supported:   map[string]bool{},
		lastRefresh: time.Now(), // records are written with a full TTL

		wsDeflate: newWSDeflate(cfg),

		connectMargin: defaultConnectMargin,
	}
	if b.obs == nil {
		b.obs = nopObserver{}
	}
	b.draining, b.stopForwards = context.WithCancel(context.Background())
	for _, t := range cfg.Transports {
		b.supported[t] = true
	}
	// An engine that can take its handler now delivers from the start,
	// even before Run's goroutine gets to register it.
	if hs, ok := cfg.Engine.(interface{ SetHandler(engine.Handler) }); ok {
		hs.SetHandler((*engineHandler)(b))
	}
	return b, nil
}

// Config returns the effective configuration (defaults applied).
func (b *Broker) Config() Config { return b.cfg }

// Run delivers engine publications and sweeps expired sessions until ctx is
// done. It returns the engine's error, if any.
func (b *Broker) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- b.eng.Run(ctx, (*engineHandler)(b)) }()
	t := time.NewTicker(b.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return <-errc
		case err := <-errc:
			if err != nil {
				return fmt.Errorf("engine: %w", err)
			}
			return nil
		case now := <-t.C:
			b.sweep(now)
		}
	}
}

// HandleService registers h for publishes to pattern (a /service/ name or
// wildcard). The most specific registered pattern wins.
func (b *Broker) HandleService(pattern string, h ServiceHandler) error {
	if _, _, err := channel.Parse(pattern); err != nil || !protocol.IsService(pattern) {
		return fmt.Errorf("service pattern %q: must be a valid /service/ channel", pattern)
	}
	b.servicesMu.Lock()
	defer b.servicesMu.Unlock()
	b.services[pattern] = h
	return nil
}

func (b *Broker) service(name string) ServiceHandler {
	var buf [channel.MaxDepth + 2]string
	b.servicesMu.RLock()
	defer b.servicesMu.RUnlock()
	for _, p := range channel.Candidates(buf[:0], name) {
		if h := b.services[p]; h != nil {
			return h
		}
	}
	return nil
}

// Publish publishes data (valid JSON) to a concrete broadcast channel from
// the server side. It returns the publication's position.
func (b *Broker) Publish(ctx context.Context, name string, data json.RawMessage) (engine.Position, error) {
	if err := validatePublishChannel(name); err != nil {
		return engine.Position{}, err
	}
	if !json.Valid(data) {
		return engine.Position{}, errors.New("publish: data is not valid JSON")
	}
	ctx, span := b.cfg.Tracer.Publish(ctx, name)
	defer span.End()
	p, err := b.eng.Publish(ctx, name, protocol.AppendPublication(nil, name, data, nil, nil))
	b.obs.Publish(err == nil)
	if err != nil {
		return engine.Position{}, fmt.Errorf("publish %s: %w", name, err)
	}
	b.metrics.publishes.Add(1)
	return engine.Position{Epoch: p.Epoch, Offset: p.Offset}, nil
}

// Session returns the local session with the given id.
func (b *Broker) Session(id string) (*Session, bool) {
	return b.sessions.get(id)
}

// QueuedMessages returns the messages waiting in every local session's
// queue (unacknowledged batches included). It walks the sessions: for
// scrapes, not for hot paths.
func (b *Broker) QueuedMessages() int {
	n := 0
	for _, s := range b.sessions.snapshot() {
		n += s.QueueLen()
	}
	return n
}

// Stats returns a snapshot of counters.
func (b *Broker) Stats() Stats {
	n := b.sessions.len()
	m := &b.metrics
	return Stats{
		Sessions: n, Patterns: b.idx.patterns(),
		Handshakes: m.handshakes.Load(), Connects: m.connects.Load(), Publishes: m.publishes.Load(),
		Deliveries: m.deliveries.Load(), QueueOverflows: m.queueOverflows.Load(), Expired: m.expired.Load(), Gaps: m.gaps.Load(), Adopted: m.adopted.Load(),
	}
}

// ExpireSession ends a session as if it had timed out: its held connect is
// answered with 402 and handshake advice. It reports whether it existed.
func (b *Broker) ExpireSession(id string) bool {
	s, ok := b.Session(id)
	if !ok {
		return false
	}
	b.removeSession(s, unknownClient(id))
	b.metrics.expired.Add(1)
	return true
}

func unknownClient(id string) *protocol.Error {
	return protocol.NewError(protocol.CodeUnknownClient, "Unknown client", id)
}

// removeSession ends s with reason: it leaves the session table (see
// dropSession), then its record and engine subscriptions are released.
func (b *Broker) removeSession(s *Session, reason *protocol.Error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ids []string
	if b.dropSession(s, reason) {
		ids = append(ids, s.id)
	}
	b.releaseBackend(ctx, []*Session{s}, ids)
}

// dropSession closes s with reason and removes it from the session table,
// releasing its limits; it reports whether its durable record is to be
// deleted.
func (b *Broker) dropSession(s *Session, reason *protocol.Error) (deleteRecord bool) {
	s.mu.Lock()
	s.closeLocked(reason)
	s.mu.Unlock()
	removed := b.sessions.remove(s)
	if removed {
		b.obs.SessionClosed(s.info.Transport)
		s.releaseLimits()
	}
	if removed && reason != nil && (reason == errDisconnected || reason == errEnded || reason.Code == protocol.CodeMessagesLost || reason.Code == protocol.CodeQueueOverflow) {
		b.sessions.bury(s.id, reason, time.Now())
	}
	return removed && b.store != nil && reason != errMoved
}

// sweepWorkers bounds the concurrent backend calls (unsubscribes, record
// deletes) of one sweep; sweepBudget bounds the whole: a Redis black hole
// delays a sweep by sweepBudget, not by a timeout per expired session.
const (
	sweepWorkers = 8
	sweepBudget  = 5 * time.Second
)

// batchDeleter is a SessionStore that deletes many records in one round
// trip (the cluster's does).
type batchDeleter interface {
	DeleteMany(ctx context.Context, ids []string) error
}

// releaseBackend deletes the records ids and drops the engine
// subscriptions of sessions, at most sweepWorkers calls at a time, until
// ctx ends.
func (b *Broker) releaseBackend(ctx context.Context, sessions []*Session, ids []string) {
	sem := make(chan struct{}, sweepWorkers)
	var wg sync.WaitGroup
	do := func(f func()) {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			f() // fails at once on the ended ctx, logging what was left
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			f()
		}()
	}
	if bd, ok := b.store.(batchDeleter); ok && len(ids) > 1 {
		do(func() {
			if err := bd.DeleteMany(ctx, ids); err != nil {
				b.log.Warn("delete session records", "sessions", len(ids), "err", err)
			}
		})
	} else {
		for _, id := range ids {
			do(func() {
				if err := b.store.Delete(ctx, id); err != nil {
					b.log.Warn("delete session record", "session", id, "err", err)
				}
			})
		}
	}
	for _, s := range sessions {
		for _, p := range s.Subscriptions() {
			do(func() {
				if err := b.idx.remove(ctx, s, p); err != nil {
					b.log.Warn("unsubscribe on session end", "session", s.id, "pattern", p, "err", err)
				}
			})
		}
	}
	wg.Wait()
}

// reap schedules removal of a session closed from a context that holds
// index locks (fan-out); the sweeper completes it.
func (b *Broker) reap(s *Session) {
	b.sessions.reap(s)
}

func (b *Broker) sweep(now time.Time) {
	var ended []*Session
	var ids []string
	for _, s := range b.sessions.takeReaped() {
		if b.dropSession(s, s.closedReason()) {
			ids = append(ids, s.id)
		}
		ended = append(ended, s)
	}
	// A node without its lease expires nothing: its clients could not
	// reach it (adopt_fence.go gives them their time back when it returns).
	var live []*Session
	if !b.fenced() {
		live = b.sessions.snapshot()
	}
	for _, s := range live {
		if !s.expired(now, b.expiryInterval) {
			continue
		}
		reason := s.closedReason()
		if reason == nil {
			reason = unknownClient(s.id)
			b.metrics.expired.Add(1)
			b.log.Debug("session expired", "session", s.id)
		}
		if b.dropSession(s, reason) {
			ids = append(ids, s.id)
		}
		ended = append(ended, s)
	}
	if len(ended) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), sweepBudget)
		b.releaseBackend(ctx, ended, ids)
		cancel()
	}
	b.refreshRecords(now)
	b.sessions.forget(now, b.cfg.MaxInterval)
}

// tombstone returns why session id ended here recently, if it must be told.
func (b *Broker) tombstone(id string) *protocol.Error { return b.sessions.tombstone(id) }

// ShuttingDown reports whether Shutdown has been called.
func (b *Broker) ShuttingDown() bool { return b.shuttingDown.Load() }

// Shutdown stops taking handshakes and answers every held connect with
// reconnect "retry" advice so clients move to another node. It does not
// close the engine or the HTTP server.
//
// In cluster mode it first hands every session off (handOff). Right after
// that, the held connects this node forwarded to other owners are
// released there (forwardTo), and, every drainTick until Shutdown
// returns, whatever is still held here is answered: a session adopted or
// created while the hand-off ran is handed off too, a connect that raced
// the first pass is answered. So a drain takes as long as its hand-off
// and the last replies, not ctx's deadline.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.shuttingDown.Store(true)
	if b.store != nil {
		// Cluster mode: hand every session to the peers (drain).
		if err := b.handOff(ctx); err != nil {
			b.log.Warn("drain", "err", err)
		}
	}
	b.stopForwards()
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(drainTick)
		defer t.Stop()
		for {
			b.releaseHeld(ctx)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	// Sockets and parked long-polls close after writing the retry advice;
	// wait for them, then cut what is left when ctx ends.
	b.closeWebSockets(ctx)
	b.closeParked(ctx)
	return ctx.Err()
}

// drainTick is how often a draining node answers what is still held
// (Shutdown) and asks the owner of a connect it forwarded to release it
// (forwardTo): either may arrive just after the previous attempt.
const drainTick = 50 * time.Millisecond

// releaseHeld is one pass of Shutdown's: in cluster mode the sessions
// still here are handed off (their held connects answered with retry
// advice); on a single node every held connect is answered with retry
// advice.
func (b *Broker) releaseHeld(ctx context.Context) {
	all := b.sessions.snapshot()
	if b.store != nil && len(all) > 0 {
		if err := b.handOff(ctx); err != nil {
			b.log.Warn("drain", "err", err)
		}
		return
	}
	for _, s := range all {
		s.mu.Lock()
		if s.waiter != nil {
			s.endWaiterLocked(endShutdown)
		}
		s.mu.Unlock()
	}
}

// engineHandler adapts the broker to engine.BatchHandler.
type engineHandler Broker

var _ engine.BatchHandler = (*engineHandler)(nil)

// OnPublications fans a batch out with one wake-up per socket or held
// connect (subIndex.fanoutBatch).
func (h *engineHandler) OnPublications(ps []*engine.Publication) {
	b := (*Broker)(h)
	n := b.idx.fanoutBatch(ps, withReplayID)
	b.metrics.deliveries.Add(int64(n))
	if n > 0 {
		b.obs.Deliveries(n)
	}
}

func (h *engineHandler) OnPublication(p *engine.Publication) {
	b := (*Broker)(h)
	n := b.idx.fanout(p, withReplayID)
	b.metrics.deliveries.Add(int64(n))
	if n > 0 {
		b.obs.Deliveries(n)
	}
}

// OnGap tells every local session that may have missed messages on ch (a
// channel, or a wildcard pattern whose channels the engine could not catch
// up): the session ends with error 410 and handshake advice, so the client
// handshakes again and resubscribes, instead of silently missing messages.
func (h *engineHandler) OnGap(ch string, from, to engine.Position) {
	b := (*Broker)(h)
	b.metrics.gaps.Add(1)
	b.obs.Gap()
	sessions := b.idx.affected(ch)
	b.log.Warn("unrecoverable gap", "channel", ch, "from", from.Offset, "to", to.Offset, "sessions", len(sessions))
	reason := protocol.NewError(protocol.CodeMessagesLost, "Messages lost; handshake again", ch)
	for _, s := range sessions {
		s.mu.Lock()
		s.closeLocked(reason)
		s.mu.Unlock()
		b.reap(s)
	}
}

func validatePublishChannel(name string) *protocol.Error {
	kind, _, err := channel.Parse(name)
	switch {
	case err != nil:
		return protocol.NewError(protocol.CodeInvalidChannel, "Invalid channel: "+err.Error(), name)
	case kind != channel.Concrete:
		return protocol.NewError(protocol.CodeInvalidChannel, "Cannot publish to a wildcard channel", name)
	case protocol.IsMeta(name):
		return protocol.NewError(protocol.CodeInvalidChannel, "Cannot publish to a meta channel", name)
	}
	return nil
}
