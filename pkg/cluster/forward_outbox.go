package cluster

import (
	"runtime"
	"sync"
)

// Limits of one forward stream (Node.Forward), the same on both sides.
const (
	// fwdInflight bounds the requests in flight on one stream: sent or
	// queued and not yet answered (held connects included). A caller
	// past it fails at once (the owner is then unavailable to it); an
	// owner refuses a request past it with ResourceExhausted.
	fwdInflight = 8192
	// fwdQueued bounds the requests a caller has queued and its stream's
	// sender has not yet written: past it the stream is stalled (the
	// owner does not read) and a new request fails at once rather than
	// wait behind it.
	fwdQueued = 1024
	// fwdBatchBytes ends a stream message once the requests (or replies)
	// in it reach this many bytes; a larger one goes alone.
	fwdBatchBytes = 1 << 20
)

// outbox is the queue of a stream's one sender goroutine: any goroutine
// pushes, the sender takes everything queued at once and writes it as
// few stream messages (coalescing what queued up while it wrote).
type outbox[T any] struct {
	mu    sync.Mutex
	items []T
	spare []T
	wake  chan struct{} // capacity 1: something was pushed since the last take
}

func newOutbox[T any]() *outbox[T] { return &outbox[T]{wake: make(chan struct{}, 1)} }

// push queues x, unless limit > 0 and limit items are already queued
// (then it reports false).
func (o *outbox[T]) push(x T, limit int) bool {
	o.mu.Lock()
	if limit > 0 && len(o.items) >= limit {
		o.mu.Unlock()
		return false
	}
	o.items = append(o.items, x)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return true
}

// take returns everything queued (valid until the next take) and empties
// the queue.
func (o *outbox[T]) take() []T {
	o.mu.Lock()
	defer o.mu.Unlock()
	got := o.items
	clear(o.spare)
	o.items, o.spare = o.spare[:0], got
	return got
}

// chunks calls send with consecutive runs of items whose sizes add up to
// at most max (a single larger item alone), stopping at send's first
// error.
func chunks[T any](items []T, size func(T) int, max int, send func([]T) error) error {
	for start := 0; start < len(items); {
		end, n := start+1, size(items[start])
		for end < len(items) && n+size(items[end]) <= max {
			n += size(items[end])
			end++
		}
		if err := send(items[start:end]); err != nil {
			return err
		}
		start = end
	}
	return nil
}

// gather lets the goroutines that are ready to run push to an outbox
// before its sender, just woken by a push, takes what the outbox holds:
// the sender yields the processor once. The Go scheduler runs a goroutine
// woken by a channel send next, ahead of the others ready to run, so
// without the yield the sender took each item alone: one stream message,
// one write to the socket and one read at the peer per forwarded request,
// even when a fan-out answers every held connect of a node at once
// (measured in the long-polling fan-out through three nodes: 1.005
// requests, or replies, per stream message; with the yield 2.9 requests
// and 4.9 replies). Yielding again while the last yield let more items
// in gathered no more (5.0 replies).
func gather() { runtime.Gosched() }
