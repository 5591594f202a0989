package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
)

// Publish pipelining defaults (RedisConfig.PipelineSize, PipelineDelay).
const (
	// DefaultPipelineSize is the most publishes sent in one pipeline.
	DefaultPipelineSize = 128
	// pipelineBytes also closes a pipeline once its payloads reach this
	// size (the last publish taken may pass it), so that large messages
	// do not make one huge write.
	pipelineBytes = 1 << 20
	// queuePerPipeline: the queue holds this many pipelines' worth of
	// publishes.
	queuePerPipeline = 8
)

// publisher sends the node's publishes, from all sessions, to Redis in
// pipelines: one flusher goroutine takes what is queued (up to the
// pipeline size, or after PipelineDelay when that is set), sends it as one
// pipeline of EVALSHA (followed by one WAIT when WaitReplicas is set; on a
// Redis Cluster one pipeline, and one WAIT, per master) and completes each
// publish when its pipeline has returned. One pipeline is in flight at a
// time, so publishes reach Redis in queue order: a publisher that awaits
// each publish keeps its order, and so does every channel.
//
// The queue holds queuePerPipeline × the pipeline size. When it is full,
// Publish waits for room until its context ends (the publishing
// connection is slowed down, nothing is dropped).
type publisher struct {
	r     *Redis
	size  int
	delay time.Duration
	queue chan *pubReq
	ctx   context.Context // the pipelines' context; cancelled by close
	stop  context.CancelFunc
	done  chan struct{} // closed when the flusher has returned
	// pipelines counts the pipelines sent (tests).
	pipelines atomic.Uint64
}

// A pubReq moves from queued to taken (by the flusher, which then
// completes it) or to abandoned (by its caller, whose context ended
// before the flusher took it: it is never sent).
const (
	reqQueued int32 = iota
	reqTaken
	reqAbandoned
)

// pubReq is one publish waiting for its pipeline.
type pubReq struct {
	keys  []string
	args  []any
	bytes int
	state atomic.Int32
	res   []any
	err   error
	done  chan struct{} // closed once res and err are set
}

func newPublisher(r *Redis) *publisher {
	size := r.cfg.PipelineSize
	if size <= 0 {
		size = DefaultPipelineSize
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &publisher{r: r, size: size, delay: r.cfg.PipelineDelay, queue: make(chan *pubReq, queuePerPipeline*size),
		ctx: ctx, stop: cancel, done: make(chan struct{})}
	go p.run()
	return p
}

// close stops the flusher: a pipeline in flight is cancelled, and what is
// still queued fails with engine.ErrClosed.
func (p *publisher) close() {
	p.stop()
	<-p.done
}

// enqueue queues q, waiting for room until ctx ends.
func (p *publisher) enqueue(ctx context.Context, q *pubReq) error {
	q.done = make(chan struct{})
	select {
	case p.queue <- q:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.ctx.Done():
		return engine.ErrClosed
	}
}

// await waits until q's pipeline returned (q.res and q.err are then set),
// or until ctx ends before q was sent.
func (p *publisher) await(ctx context.Context, q *pubReq) error {
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
	case <-p.done:
	}
	if q.state.CompareAndSwap(reqQueued, reqAbandoned) {
		if err := ctx.Err(); err != nil {
			return err
		}
		return engine.ErrClosed
	}
	<-q.done // taken: its pipeline completes it
	return nil
}

func (p *publisher) run() {
	defer close(p.done)
	batch := make([]*pubReq, 0, p.size)
	for {
		select {
		case q := <-p.queue:
			batch = append(batch, q)
		case <-p.ctx.Done():
			p.failQueued()
			return
		}
		batch = p.fill(batch)
		p.flush(batch)
		clear(batch)
		batch = batch[:0]
	}
}

// fill adds to batch what is queued, up to the pipeline size and bytes;
// with a delay, it waits for more until the delay has passed since the
// first.
func (p *publisher) fill(batch []*pubReq) []*pubReq {
	bytes := batch[0].bytes
	var deadline <-chan time.Time
	if p.delay > 0 {
		t := time.NewTimer(p.delay)
		defer t.Stop()
		deadline = t.C
	}
	for len(batch) < p.size && bytes < pipelineBytes {
		select {
		case q := <-p.queue:
			batch, bytes = append(batch, q), bytes+q.bytes
			continue
		default:
		}
		if deadline == nil {
			return batch
		}
		select {
		case q := <-p.queue:
			batch, bytes = append(batch, q), bytes+q.bytes
		case <-deadline:
			return batch
		case <-p.ctx.Done():
			return batch
		}
	}
	return batch
}

// failQueued completes every queued publish with engine.ErrClosed.
func (p *publisher) failQueued() {
	for {
		select {
		case q := <-p.queue:
			if q.state.CompareAndSwap(reqQueued, reqTaken) {
				q.err = engine.ErrClosed
				close(q.done)
			}
		default:
			return
		}
	}
}

// flush sends the batch's live publishes and completes them.
func (p *publisher) flush(batch []*pubReq) {
	live := batch[:0:0]
	for _, q := range batch {
		if q.state.CompareAndSwap(reqQueued, reqTaken) {
			live = append(live, q)
		}
	}
	if len(live) == 0 {
		return
	}
	r := p.r
	switch {
	case r.cfg.WaitReplicas > 0 && r.cc != nil:
		p.perMaster(live)
	default:
		// On a Redis Cluster without WAIT, go-redis splits the pipeline
		// by node, runs the parts concurrently and follows redirects.
		p.pipeline(r.client, live, r.cfg.WaitReplicas > 0)
	}
	for _, q := range live {
		close(q.done)
	}
}

// perMaster sends one pipeline, ending with WAIT, to each master that
// owns some of the publishes' channels, concurrently.
func (p *publisher) perMaster(reqs []*pubReq) {
	groups := map[*redis.Client][]*pubReq{}
	var order []*redis.Client
	for _, q := range reqs {
		shard, err := p.r.cc.MasterForKey(p.ctx, q.keys[0])
		if err != nil {
			q.err = err
			continue
		}
		if _, ok := groups[shard]; !ok {
			order = append(order, shard)
		}
		groups[shard] = append(groups[shard], q)
	}
	var wg sync.WaitGroup
	for _, shard := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.pipeline(shard, groups[shard], true)
		}()
	}
	wg.Wait()
	for _, q := range reqs {
		if q.err != nil && isRedirect(q.err) {
			// The slot moved (resharding): the publish fails, and the
			// next one goes to the new owner once the slot map is
			// reloaded.
			p.r.cc.ReloadState(p.ctx)
			return
		}
	}
}

// pipeline sends reqs to c as one pipeline (and WAIT), and again with EVAL
// those that found the script missing, if that keeps their order: when a
// publish after the first NOSCRIPT succeeded (the script was loaded by
// another node meanwhile), resending would order the failed ones after it,
// so they fail instead.
func (p *publisher) pipeline(c redis.Cmdable, reqs []*pubReq, wait bool) {
	p.exec(c, reqs, wait, false)
	var missing []*pubReq
	for _, q := range reqs {
		switch {
		case isNoScript(q.err):
			missing = append(missing, q)
		case q.err == nil && len(missing) > 0:
			return
		}
	}
	if len(missing) > 0 {
		p.exec(c, missing, wait, true)
	}
}

// exec sends one pipeline of the publish script (EVALSHA, or EVAL) for
// reqs, then WAIT if asked, and sets each publish's result.
func (p *publisher) exec(c redis.Cmdable, reqs []*pubReq, wait, eval bool) {
	r := p.r
	pipe := c.Pipeline()
	cmds := make([]*redis.Cmd, len(reqs))
	for i, q := range reqs {
		cmds[i] = r.publishCmd(p.ctx, eval, q.keys, q.args)
		_ = pipe.Process(p.ctx, noRetryCmd{cmds[i]})
	}
	var wc *redis.Cmd
	if wait {
		// WAIT as a plain command: Pipeliner does not list it. Its
		// timeout stays below the connection's read timeout.
		wc = pipe.Do(p.ctx, "wait", r.cfg.WaitReplicas, r.cfg.WaitTimeout.Milliseconds())
	}
	_, _ = pipe.Exec(p.ctx)
	p.pipelines.Add(1)
	for i, q := range reqs {
		q.res, q.err = cmds[i].Slice()
	}
	if wc == nil {
		return
	}
	var werr error
	if n, err := wc.Int64(); err != nil {
		werr = fmt.Errorf("%w: WAIT: %w", ErrNotReplicated, err)
	} else if n < int64(r.cfg.WaitReplicas) {
		werr = fmt.Errorf("%w: %d of %d replicas within %v", ErrNotReplicated, n, r.cfg.WaitReplicas, r.cfg.WaitTimeout)
	}
	if werr != nil {
		for _, q := range reqs {
			if q.err == nil {
				q.res, q.err = nil, werr
			}
		}
	}
}

// setScript sets the publish script.
func (r *Redis) setScript(src string) {
	r.script, r.scriptSrc = redis.NewScript(src), src
}

// publishCmd builds one run of the publish script: EVALSHA, or EVAL with
// its source (after NOSCRIPT).
func (r *Redis) publishCmd(ctx context.Context, eval bool, keys []string, args []any) *redis.Cmd {
	a := make([]any, 0, 3+len(keys)+len(args))
	if eval {
		a = append(a, "eval", r.scriptSrc)
	} else {
		a = append(a, "evalsha", r.script.Hash())
	}
	a = append(a, len(keys))
	for _, k := range keys {
		a = append(a, k)
	}
	return redis.NewCmd(ctx, append(a, args...)...)
}

// noRetryCmd is a command go-redis must never send again on its own. The
// publish script is not idempotent (each run appends and publishes), and a
// failure after the command was written (a read timeout: the node or Redis
// stalled; a connection closed before the reply) does not mean it did not
// run: sent again, it would publish twice. go-redis retries a failed
// pipeline (MaxRetries; on a Redis Cluster, up to MaxRedirects) unless one
// of its commands reports NoRetry. A MOVED or ASK reply is still followed:
// the command did not run. The publish fails instead, and its client is
// told (503: it may have been delivered).
type noRetryCmd struct{ *redis.Cmd }

// NoRetry implements redis.Cmder.
func (noRetryCmd) NoRetry() bool { return true }
