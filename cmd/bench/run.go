package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// closeTimeout bounds closing every session at the end of a run.
const closeTimeout = 20 * time.Second

// runner is the state of one Run.
type runner struct {
	cfg      Config
	base     string // channel prefix, unique per run
	httpc    *http.Client
	subs     []*subscriber
	pubs     []*publisher
	total    atomic.Int64
	measure  atomic.Int64
	sessions sessionSet
	wire     wireCounter
}

// Run runs one scenario and returns its result. It stops by itself: setup
// is bounded by cfg.SetupTimeout, traffic by cfg.Warmup+cfg.Duration, the
// tail by cfg.Drain, closing by a fixed bound; cancelling ctx ends it early
// with an error.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.normalize(); err != nil {
		return Result{}, err
	}
	var id [4]byte
	_, _ = rand.Read(id[:])
	r := &runner{
		cfg:  cfg,
		base: "/bench/" + hex.EncodeToString(id[:]),
	}
	r.httpc = &http.Client{Transport: &http.Transport{
		DialContext:         r.wire.dial,
		MaxIdleConnsPerHost: 2*(cfg.Subscribers+cfg.Publishers) + 16,
		IdleConnTimeout:     30 * time.Second,
	}}
	defer r.httpc.CloseIdleConnections()
	defer r.sessions.closeAll(closeTimeout)
	res := Result{
		Scenario:       cfg.Scenario,
		Transport:      cfg.Transport,
		Params:         paramsOf(cfg),
		StartedAt:      time.Now().UTC().Format(time.RFC3339),
		LatencyStorage: "raw samples (int64 ns) in per-subscriber slices preallocated to max_samples/subscribers; exact nearest-rank percentiles",
	}
	baseline, err := r.sample()
	if err != nil {
		return res, err
	}
	res.ServerRSSBaselineBytes = baseline.RSSBytes
	if err := r.setup(ctx); err != nil {
		return res, err
	}
	res.Sessions = len(r.subs) + len(r.pubs)
	if cfg.Scenario == IdleSessions {
		return r.idle(ctx, res, baseline)
	}
	return r.traffic(ctx, res)
}

func (r *runner) channelName(c int) string { return fmt.Sprintf("%s/c%d", r.base, c) }

func (r *runner) sample() (procSample, error) {
	if len(r.cfg.ServerPIDs) == 0 {
		return procSample{}, nil
	}
	s, err := sampleProcs(r.cfg.ServerPIDs)
	if err != nil {
		return s, fmt.Errorf("--server-pid: %w", err)
	}
	return s, nil
}

func (r *runner) dial(ctx context.Context, onMsg func(*wireMsg)) (*session, error) {
	s, err := dialSession(ctx, r.cfg.URL, r.cfg.Transport, r.httpc, !r.cfg.DisableAck, r.cfg.WSDeflate)
	if err != nil {
		return nil, err
	}
	s.onMsg = onMsg
	r.sessions.add(s)
	return s, nil
}

// setup dials and subscribes every subscriber, then dials the publishers,
// DialParallel at a time, all within SetupTimeout.
func (r *runner) setup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.SetupTimeout)
	defer cancel()
	per := 0
	if r.cfg.Scenario != IdleSessions {
		per = r.cfg.MaxSamples / r.cfg.Subscribers
		if r.cfg.Rate > 0 {
			// No subscriber can receive more than its share of rate×duration
			// (×1.5 for schedule catch-up): do not preallocate beyond it.
			bound := int(r.cfg.Rate*r.cfg.Duration.Seconds()*1.5) + 1024
			per = min(per, bound)
		}
	}
	r.subs = make([]*subscriber, r.cfg.Subscribers)
	for i := range r.subs {
		r.subs[i] = newSubscriber(i%r.cfg.Channels, r.cfg.Publishers, per, &r.total, &r.measure)
	}
	err := r.parallel(ctx, len(r.subs), func(ctx context.Context, i int) error {
		s := r.subs[i]
		c, err := r.dial(ctx, s.onMsg)
		if err != nil {
			return fmt.Errorf("subscriber %d: %w", i, err)
		}
		s.s = c
		if err := c.subscribe(ctx, r.channelName(s.channel)); err != nil {
			return fmt.Errorf("subscriber %d: %w", i, err)
		}
		c.start()
		return nil
	})
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	r.pubs = make([]*publisher, r.cfg.Publishers)
	for p := range r.pubs {
		r.pubs[p] = newPublisher(p, r.cfg)
	}
	err = r.parallel(ctx, len(r.pubs), func(ctx context.Context, i int) error {
		p := r.pubs[i]
		c, err := r.dial(ctx, p.onMsg)
		if err != nil {
			return fmt.Errorf("publisher %d: %w", i, err)
		}
		p.s = c
		c.start()
		return nil
	})
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	return nil
}

// parallel calls fn(ctx, i) for i in [0,n), DialParallel at a time, and
// returns the first error.
func (r *runner) parallel(ctx context.Context, n int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, r.cfg.DialParallel)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for i := 0; i < n; i++ {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(ctx, i); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return first
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// idle holds the sessions for Duration and reports server RSS per session.
func (r *runner) idle(ctx context.Context, res Result, baseline procSample) (Result, error) {
	start := time.Now()
	s0, err := r.sample()
	if err != nil {
		return res, err
	}
	t0 := selfCPU()
	if err := sleepUntil(ctx, start.Add(r.cfg.Duration)); err != nil {
		return res, err
	}
	s1, err := r.sample()
	if err != nil {
		return res, err
	}
	res.ToolCPUSeconds = selfCPU() - t0
	res.WindowSeconds = secs(time.Since(start))
	res.ServerCPUSeconds = s1.CPUSeconds - s0.CPUSeconds
	res.ServerRSSBytes = s1.RSSBytes
	if len(r.cfg.ServerPIDs) > 0 {
		res.RSSPerSessionBytes = float64(s1.RSSBytes-baseline.RSSBytes) / float64(len(r.subs))
	}
	res.ConnectFailures, res.SessionsFailed = r.failures()
	return res, nil
}

// failures counts refused or failed connects and sessions that ended
// early, over all sessions.
func (r *runner) failures() (connects, sessions int64) {
	r.sessions.mu.Lock()
	defer r.sessions.mu.Unlock()
	for _, s := range r.sessions.list {
		connects += s.failures.Load()
		if s.err() != nil {
			sessions++
		}
	}
	return connects, sessions
}

// traffic runs the publishers, drains, and accounts.
func (r *runner) traffic(ctx context.Context, res Result) (Result, error) {
	cfg := r.cfg
	t0 := time.Now()
	measureAt := t0.Add(cfg.Warmup)
	stopAt := measureAt.Add(cfg.Duration)
	var s0, a0 procSample
	var cpu0 float64
	var in0, out0 int64
	var err error
	startWindow := func() {
		r.measure.Store(time.Now().UnixNano())
		in0, out0 = r.wire.in.Load(), r.wire.out.Load()
		cpu0 = selfCPU()
		a0, _ = sampleProcs(cfg.AuxPIDs)
		s0, err = r.sample()
	}
	if cfg.Warmup == 0 {
		startWindow()
		if err != nil {
			return res, err
		}
	}
	var wg sync.WaitGroup
	for _, p := range r.pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(ctx, r, t0, stopAt, stopAt.Add(max(cfg.Duration, 5*time.Second)))
		}()
	}
	if cfg.Warmup > 0 {
		if e := sleepUntil(ctx, measureAt); e == nil {
			startWindow()
		} else {
			err = e
		}
	}
	wg.Wait()
	if err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	// Expected deliveries: per subscriber, acknowledged publications on its channel.
	perChannel := make([]int64, cfg.Channels)
	for _, p := range r.pubs {
		for i, c := range p.channels {
			perChannel[c] += p.acked[i].Load()
		}
		res.Published += p.published.Load()
		res.PublishErrors += p.errors.Load()
		res.ScheduleLagMs = max(res.ScheduleLagMs, float64(p.lag)/1e6)
	}
	for _, s := range r.subs {
		res.Expected += perChannel[s.channel]
	}
	pubEnd := time.Now()
	drainEnd := pubEnd.Add(cfg.Drain)
	for r.total.Load() < res.Expected && time.Now().Before(drainEnd) && ctx.Err() == nil {
		time.Sleep(2 * time.Millisecond)
	}
	end := time.Now()
	s1, err := r.sample()
	if err != nil {
		return res, err
	}
	if a1, err := sampleProcs(cfg.AuxPIDs); err == nil && len(cfg.AuxPIDs) > 0 {
		res.AuxCPUSeconds = a1.CPUSeconds - a0.CPUSeconds
	}
	res.ToolCPUSeconds = selfCPU() - cpu0
	res.WireBytesIn, res.WireBytesOut = r.wire.in.Load()-in0, r.wire.out.Load()-out0
	res.DrainSeconds = secs(end.Sub(pubEnd))
	res.ServerCPUSeconds = s1.CPUSeconds - s0.CPUSeconds
	res.ServerRSSBytes = s1.RSSBytes
	res.ConnectFailures, res.SessionsFailed = r.failures()
	r.sessions.closeAll(closeTimeout) // waits for every session goroutine: the counters are final after this
	if err := ctx.Err(); err != nil {
		return res, err
	}
	window := time.Duration(end.UnixNano() - r.measure.Load())
	res.WindowSeconds = secs(window)

	return r.tally(res, perChannel, window), nil
}

// tally adds the subscribers' and publishers' counts and latencies of the
// measurement window to res.
func (r *runner) tally(res Result, perChannel []int64, window time.Duration) Result {
	cfg := r.cfg
	var measured, pubMeasured int64
	nSamples := 0
	for _, s := range r.subs {
		nSamples += len(s.samples)
	}
	all := make([]int64, 0, nSamples)
	for _, s := range r.subs {
		res.Delivered += s.delivered
		res.Duplicated += s.dup
		res.OutOfOrder += s.ooo
		res.Malformed += s.bad
		res.Lost += max(0, perChannel[s.channel]-s.unique)
		measured += s.measured
		res.LatencySamplesDropped += s.dropped
		all = append(all, s.samples...)
	}
	for _, p := range r.pubs {
		pubMeasured += p.measured.Load()
	}
	res.LatencyMs = latencyOf(all)
	res.LatencySamples = len(all)
	if window > 0 {
		res.DeliveriesPerSec = float64(measured) / window.Seconds()
		res.PublishesPerSec = float64(pubMeasured) / cfg.Duration.Seconds()
	}
	if res.ServerCPUSeconds > 0 {
		res.DeliveriesPerServerCPUSec = float64(measured) / res.ServerCPUSeconds
	}
	if measured > 0 {
		res.WireBytesInPerDelivery = float64(res.WireBytesIn) / float64(measured)
	}
	return res
}
