package broker

import (
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// Observer receives the broker's operational events, for metrics. It is
// optional (Config.Observer); without one the broker uses nopObserver.
//
// Contract: methods are called concurrently from request, fan-out and
// sweeper goroutines, sometimes while broker locks are held, so they must be
// cheap, must not block and must not call back into the broker. Arguments
// are drawn from small fixed sets (transport names, protocol error codes),
// so an implementation can pre-bind one counter per value.
type Observer interface {
	// SessionOpened and SessionClosed are called once each per session,
	// with the transport the session handshook on.
	SessionOpened(transport string)
	SessionClosed(transport string)
	// Handshake is called for every /meta/handshake, ok if it succeeded.
	Handshake(ok bool)
	// Connect is called for every /meta/connect processed.
	Connect()
	// Subscribe is called for every /meta/subscribe processed.
	Subscribe()
	// Publish is called for every publish to a broadcast channel (client
	// or server side), ok if the engine accepted it.
	Publish(ok bool)
	// Deliveries reports n publications enqueued to local sessions by one
	// fan-out.
	Deliveries(n int)
	// Error is called for every failed reply written, with its Bayeux error
	// code (400..599).
	Error(code int)
	// QueueOverflow is called when a session is terminated because its
	// queue was full.
	QueueOverflow()
	// HeldConnect reports a /meta/connect starting (+1) or ending (-1) being
	// held.
	HeldConnect(delta int)
	// Gap is called for every unrecoverable gap the engine reports, and
	// for every adopted session whose missed messages history no longer
	// holds.
	Gap()
	// SessionAdopted is called when this node takes over a session from a
	// dead or draining node (cluster mode).
	SessionAdopted()
	// DeliveryLatency is called for each publication handed to a client's
	// transport, with the time since it was published (seconds).
	DeliveryLatency(seconds float64)
	// LimitRefused is called for every request refused by a per-address
	// limit (LimitSessionsPerIP, LimitHeldPerIP).
	LimitRefused(limit string)
}

// observeDelivered reports the publish-to-deliver latency of pubs (those
// with a publish time; direct deliveries have none).
func (b *Broker) observeDelivered(pubs []*engine.Publication) {
	if len(pubs) == 0 {
		return
	}
	now := time.Now().UnixMilli()
	for _, p := range pubs {
		if p.Time > 0 {
			b.obs.DeliveryLatency(float64(max(now-p.Time, 0)) / 1000)
		}
	}
}

// observeReply reports r to the observer if it failed.
func (b *Broker) observeReply(r *protocol.Reply) {
	if r == nil || r.Successful == nil || *r.Successful {
		return
	}
	b.obs.Error(r.ErrorCode())
}

// nopObserver is the Observer of a broker configured without one.
type nopObserver struct{}

func (nopObserver) SessionOpened(string)    {}
func (nopObserver) SessionClosed(string)    {}
func (nopObserver) Handshake(bool)          {}
func (nopObserver) Connect()                {}
func (nopObserver) Subscribe()              {}
func (nopObserver) Publish(bool)            {}
func (nopObserver) Deliveries(int)          {}
func (nopObserver) Error(int)               {}
func (nopObserver) QueueOverflow()          {}
func (nopObserver) HeldConnect(int)         {}
func (nopObserver) Gap()                    {}
func (nopObserver) SessionAdopted()         {}
func (nopObserver) DeliveryLatency(float64) {}
func (nopObserver) LimitRefused(string)     {}
