package cluster

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/bayeux-cluster/bayeux/api/proto/cluster/v1"
)

// Forward serves a peer's forward stream: each request runs on a worker
// goroutine of its own (a held connect blocks only itself; see worker)
// with its own context,
// which a cancellation frame or the stream's end cancels; replies are
// written, batched, by this goroutine. Requests in flight are bounded
// by fwdInflight (past it: ResourceExhausted), and so are the queued
// replies (one per request). Once the node stops, new requests are
// refused (Unavailable) and the stream ends after the last reply.
func (s *nodeServer) Forward(stream grpc.BidiStreamingServer[clusterv1.ForwardBatch, clusterv1.ForwardReplies]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	f := &fwdServe{s: s, ctx: ctx, out: newOutbox[*clusterv1.ForwardReply](), running: map[uint64]context.CancelFunc{}, work: make(chan fwdJob)}
	readErr := make(chan error, 1)
	go func() { readErr <- f.read(stream) }()
	stopping, stopped := s.stopping, false
	for {
		select {
		case <-f.out.wake:
			gather()
			if err := f.flush(stream); err != nil {
				f.stop()
				cancel()
				f.wg.Wait()
				return err
			}
			if stopped && f.idle() {
				return f.flush(stream)
			}
		case <-stopping:
			stopping, stopped = nil, true
			f.stop()
			if f.idle() {
				return f.flush(stream)
			}
		case err := <-readErr:
			// The peer closed the stream or went away: nobody is left to
			// answer, so every request in flight is cancelled.
			cancel()
			f.wg.Wait()
			return err
		}
	}
}

// fwdServe is the owner's state of one forward stream.
type fwdServe struct {
	s   *nodeServer
	ctx context.Context
	out *outbox[*clusterv1.ForwardReply]
	wg  sync.WaitGroup

	work chan fwdJob // to an idle worker

	mu          sync.Mutex
	running     map[uint64]context.CancelFunc
	idleWorkers int
	stopping    bool
}

// fwdIdleWorkers bounds the idle workers kept per stream.
const fwdIdleWorkers = 16

// read takes the peer's frames until the stream ends.
func (f *fwdServe) read(stream grpc.BidiStreamingServer[clusterv1.ForwardBatch, clusterv1.ForwardReplies]) error {
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		for _, fr := range m.GetFrames() {
			if fr.GetCancel() {
				f.cancel(fr.GetId())
			} else {
				f.start(fr)
			}
		}
	}
}

// start runs request fr on its own goroutine, or refuses it at once.
func (f *fwdServe) start(fr *clusterv1.ForwardFrame) {
	id := fr.GetId()
	f.mu.Lock()
	var refuse error
	switch {
	case f.stopping || f.s.isStopping():
		refuse = status.Error(codes.Unavailable, "node stopping")
	case len(f.running) >= fwdInflight:
		refuse = status.Errorf(codes.ResourceExhausted, "more than %d forwarded requests in flight", fwdInflight)
	case f.running[id] != nil:
		refuse = status.Errorf(codes.InvalidArgument, "request id %d already in flight", id)
	}
	if refuse != nil {
		f.mu.Unlock()
		f.reply(id, nil, refuse)
		return
	}
	ctx, cancel := context.WithCancel(f.ctx)
	f.running[id] = cancel
	f.wg.Add(1)
	f.mu.Unlock()
	j := fwdJob{ctx: ctx, cancel: cancel, fr: fr}
	select {
	case f.work <- j: // an idle worker takes it
	default:
		go f.worker(j)
	}
}

// fwdJob is one request for a worker.
type fwdJob struct {
	ctx    context.Context
	cancel context.CancelFunc
	fr     *clusterv1.ForwardFrame
}

// worker runs j, then waits for further jobs unless fwdIdleWorkers
// already wait: a worker goroutine keeps the stack serving a request
// grew, which a new goroutine would grow again. Workers end with the
// stream.
func (f *fwdServe) worker(j fwdJob) {
	for {
		f.run(j)
		f.mu.Lock()
		if f.idleWorkers >= fwdIdleWorkers {
			f.mu.Unlock()
			return
		}
		f.idleWorkers++
		f.mu.Unlock()
		select {
		case j = <-f.work:
		case <-f.ctx.Done():
			return
		}
		f.mu.Lock()
		f.idleWorkers--
		f.mu.Unlock()
	}
}

// run serves one request and queues its reply, unless it was cancelled
// (then its caller no longer waits for one).
func (f *fwdServe) run(j fwdJob) {
	defer f.wg.Done()
	ctx, span := f.s.tracer.ForwardIn(j.ctx, j.fr.GetTraceparent())
	resp, err := f.s.process(ctx, j.fr.GetRequest())
	span.End()
	if ctx.Err() == nil || err == nil {
		f.reply(j.fr.GetId(), resp, err)
	}
	f.mu.Lock()
	delete(f.running, j.fr.GetId())
	f.mu.Unlock()
	j.cancel()
}

// cancel cancels request id if it is still running (its caller gave up
// and wants no reply).
func (f *fwdServe) cancel(id uint64) {
	f.mu.Lock()
	c := f.running[id]
	f.mu.Unlock()
	if c != nil {
		c()
	}
}

// reply queues request id's answer. The queue needs no limit: it holds
// at most one reply per request started or refused since the last flush.
func (f *fwdServe) reply(id uint64, resp *clusterv1.ProcessResponse, err error) {
	r := &clusterv1.ForwardReply{Id: id, Response: resp}
	if err != nil {
		st := status.Convert(err)
		r.Code, r.Message = uint32(st.Code()), st.Message()
	}
	f.out.push(r, 0)
}

// stop refuses every later request.
func (f *fwdServe) stop() {
	f.mu.Lock()
	f.stopping = true
	f.mu.Unlock()
}

// idle reports whether no request is running. A request's reply is
// queued before it stops running, so a flush after idle sends them all.
func (f *fwdServe) idle() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.running) == 0
}

// flush writes the queued replies.
func (f *fwdServe) flush(stream grpc.BidiStreamingServer[clusterv1.ForwardBatch, clusterv1.ForwardReplies]) error {
	size := func(r *clusterv1.ForwardReply) int { return 16 + len(r.GetResponse().GetBody()) }
	return chunks(f.out.take(), size, fwdBatchBytes, func(replies []*clusterv1.ForwardReply) error {
		return stream.Send(&clusterv1.ForwardReplies{Replies: replies})
	})
}
