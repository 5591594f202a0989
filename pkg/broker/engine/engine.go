package engine

import (
	"context"
	"errors"
)

// Publication is one published message as the engine carries it.
// Payload is the complete encoded Bayeux message (a JSON object) that is
// written to subscribers as is; it is immutable once published.
type Publication struct {
	Channel string
	Epoch   string
	Offset  uint64
	Payload []byte
	// Time is when the publication was ordered (unix milliseconds; 0 if
	// unknown), for the publish-to-deliver latency metric.
	Time int64
}

// Position is a place in a channel's stream.
type Position struct {
	Epoch  string
	Offset uint64
}

// Handler receives what the engine delivers to this node.
//
// Calls for one channel are serialized and in offset order; calls for
// different channels may be concurrent. Implementations must not block for
// long (they enqueue), and must not call back into the engine synchronously.
type Handler interface {
	// OnPublication is called once per node for each publication whose
	// channel matches at least one subscribed pattern.
	OnPublication(p *Publication)
	// OnGap reports publications on channel in (from, to] that the engine
	// knows it missed and could not recover from history.
	OnGap(channel string, from, to Position)
}

// BatchHandler is a Handler that also takes several publications in one
// call. An engine that has more than one publication ready at once (the
// Redis engine: what its pub/sub connection has buffered) hands them over
// with OnPublications when its handler is a BatchHandler, so that the
// handler wakes each subscriber once per batch instead of once per
// publication; with a plain Handler it calls OnPublication for each.
type BatchHandler interface {
	Handler
	// OnPublications is OnPublication for each of pubs, in order (the
	// ordering guarantees of Handler hold within and across batches).
	// The slice is the engine's and is reused once the call returns; the
	// Publications it points to are not.
	OnPublications(pubs []*Publication)
}

// Engine is the broker's backend. All methods are safe for concurrent use.
type Engine interface {
	// Publish assigns the next offset on the concrete channel and
	// distributes the payload. It returns only once the publication is
	// ordered; an error means it was not published.
	Publish(ctx context.Context, channel string, payload []byte) (Publication, error)
	// Subscribe starts delivery of publications matching pattern (a
	// concrete name or a wildcard) to this node's Handler. The broker calls
	// it once per pattern in use on the node, not once per client.
	Subscribe(ctx context.Context, pattern string) error
	// Unsubscribe stops delivery for pattern.
	Unsubscribe(ctx context.Context, pattern string) error
	// History returns up to limit publications on channel after pos, oldest
	// first. ErrPositionGone means pos is older than what is retained (or its
	// epoch is not the current one).
	History(ctx context.Context, channel string, after Position, limit int) ([]Publication, error)
	// Head returns the position of the newest publication on channel (the
	// zero Position when the channel has none). A History call after Head
	// returns exactly what was published since.
	Head(ctx context.Context, channel string) (Position, error)
	// Channels lists the concrete channels matching pattern that have
	// retained state (replay of a wildcard subscription). It may be slow:
	// it is not for the delivery path.
	Channels(ctx context.Context, pattern string) ([]string, error)
	// Run delivers to h until ctx is done or Close is called. Publications
	// made before Run is called may be missed.
	Run(ctx context.Context, h Handler) error
	// Close releases the engine's resources.
	Close() error
}

// AsyncPublisher is an Engine that can queue a publish and let the caller
// queue more before the first is ordered (one connection's publishes in
// flight together). Publishes queued by one goroutine are ordered in the
// order of the PublishAsync calls.
type AsyncPublisher interface {
	// PublishAsync queues the publish (waiting for room in a full queue
	// until ctx ends) and returns wait, which blocks until the outcome is
	// known and returns it as Publish would. wait must be called exactly
	// once.
	PublishAsync(ctx context.Context, channel string, payload []byte) (wait func() (Publication, error))
}

// Retained, as the position History reads after, means "from the oldest
// publication still retained", whatever the epoch (replay of everything).
var Retained = Position{Epoch: "*"}

// Errors.
var (
	ErrPositionGone = errors.New("engine: position no longer in history")
	ErrUnavailable  = errors.New("engine: backend unavailable")
	ErrClosed       = errors.New("engine: closed")
	// ErrNotDurable means a publication was not confirmed as durable as
	// configured (not enough Redis replicas had it in time): it is not
	// acknowledged, though subscribers may have received it.
	ErrNotDurable = errors.New("engine: publication not confirmed durable")
)
