package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/bayeux-cluster/bayeux/api/proto/cluster/v1"
)

// fwdStream is the forwarding side of one Node.Forward stream to a peer:
// requests are queued by id in its outbox, written in batches by a
// sender goroutine, and answered through the pending table by a receiver
// goroutine. Once broken (an error either way, or the owner ended it)
// it fails every request in flight and takes no more; the peer's next
// forward opens a new stream.
type fwdStream struct {
	stream grpc.BidiStreamingClient[clusterv1.ForwardBatch, clusterv1.ForwardReplies]
	cancel context.CancelFunc
	out    *outbox[*clusterv1.ForwardFrame]
	done   chan struct{} // closed once broken

	mu      sync.Mutex
	next    uint64
	pending map[uint64]chan fwdResult
	err     error // why it broke; nil while usable
}

type fwdResult struct {
	resp *clusterv1.ProcessResponse
	err  error
}

// Errors of a forward that never reached the owner: the caller treats
// them as an unavailable owner, like any failed forward.
var (
	errFwdBusy  = status.Error(codes.ResourceExhausted, "forward stream: too many requests in flight")
	errFwdQueue = status.Error(codes.ResourceExhausted, "forward stream: send queue full (the owner does not read)")
)

// openFwdStream opens a Forward stream on cc. The stream lives until
// broken or until cc closes; ctx (the first caller's) bounds only the
// opening.
func openFwdStream(ctx context.Context, cc grpc.ClientConnInterface) (*fwdStream, error) {
	sctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	stream, err := clusterv1.NewNodeClient(cc).Forward(sctx)
	if !stop() || err != nil {
		cancel()
		if err == nil {
			err = status.FromContextError(ctx.Err()).Err()
		}
		return nil, err
	}
	return newFwdStream(stream, cancel), nil
}

// newFwdStream starts the sender and receiver of stream; cancel ends it.
func newFwdStream(stream grpc.BidiStreamingClient[clusterv1.ForwardBatch, clusterv1.ForwardReplies], cancel context.CancelFunc) *fwdStream {
	s := &fwdStream{
		stream:  stream,
		cancel:  cancel,
		out:     newOutbox[*clusterv1.ForwardFrame](),
		done:    make(chan struct{}),
		pending: map[uint64]chan fwdResult{},
	}
	go s.send()
	go s.receive()
	return s
}

// broken reports whether the stream takes no more requests.
func (s *fwdStream) broken() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// call forwards req and waits for its reply. When ctx ends first, the
// owner is told to cancel the request (its session keeps the messages
// a held connect would have delivered) and call returns ctx's error.
func (s *fwdStream) call(ctx context.Context, req *clusterv1.ProcessRequest, traceparent string) (*clusterv1.ProcessResponse, error) {
	if err := ctx.Err(); err != nil {
		// The client went away before the request could leave (a node
		// frozen with the request in its socket reads it on resuming,
		// after the client gave up and sent later messages elsewhere):
		// never sent, so the owner cannot process it out of its order.
		return nil, status.FromContextError(err).Err()
	}
	ch := make(chan fwdResult, 1)
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return nil, err
	}
	if len(s.pending) >= fwdInflight {
		s.mu.Unlock()
		return nil, errFwdBusy
	}
	s.next++
	id := s.next
	s.pending[id] = ch
	s.mu.Unlock()
	if !s.out.push(&clusterv1.ForwardFrame{Id: id, Request: req, Traceparent: traceparent}, fwdQueued) {
		s.forget(id)
		return nil, errFwdQueue
	}
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-ctx.Done():
		if !s.forget(id) {
			// The reply, or the stream's failure, is already here:
			// take it rather than lose a reply the owner made.
			r := <-ch
			return r.resp, r.err
		}
		// Always queued: at most one per request in flight.
		s.out.push(&clusterv1.ForwardFrame{Id: id, Cancel: true}, 0)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// forget removes request id from the pending table, reporting whether it
// was still there (no result delivered yet).
func (s *fwdStream) forget(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.pending[id]
	delete(s.pending, id)
	return ok
}

// send writes what the outbox holds, in batches, until the stream breaks.
func (s *fwdStream) send() {
	size := func(f *clusterv1.ForwardFrame) int {
		n := 16
		for _, p := range f.GetRequest().GetParts() {
			n += len(p)
		}
		return n
	}
	for {
		select {
		case <-s.out.wake:
		case <-s.done:
			return
		}
		gather()
		err := chunks(s.out.take(), size, fwdBatchBytes, func(frames []*clusterv1.ForwardFrame) error {
			return s.stream.Send(&clusterv1.ForwardBatch{Frames: frames})
		})
		if err != nil {
			s.fail(err)
			return
		}
	}
}

// receive hands each reply to its request until the stream breaks.
func (s *fwdStream) receive() {
	for {
		m, err := s.stream.Recv()
		if err != nil {
			s.fail(err)
			return
		}
		for _, r := range m.GetReplies() {
			s.mu.Lock()
			ch, ok := s.pending[r.GetId()]
			delete(s.pending, r.GetId())
			s.mu.Unlock()
			if !ok {
				continue // cancelled meanwhile
			}
			if c := codes.Code(r.GetCode()); c != codes.OK {
				ch <- fwdResult{err: status.Error(c, r.GetMessage())}
			} else {
				ch <- fwdResult{resp: r.GetResponse()}
			}
		}
	}
}

// fail breaks the stream (once): every request in flight fails with
// Unavailable, the reply it waits for being lost.
func (s *fwdStream) fail(cause error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	if errors.Is(cause, io.EOF) {
		cause = errors.New("the owner ended the stream")
	}
	s.err = status.Error(codes.Unavailable, fmt.Sprintf("forward stream broken: %v", cause))
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	close(s.done)
	s.cancel()
	for _, ch := range pending {
		ch <- fwdResult{err: s.err}
	}
}

// close breaks the stream (its connection is closing).
func (s *fwdStream) close() { s.fail(errors.New("connection closed")) }
