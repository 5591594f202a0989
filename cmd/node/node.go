package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bayeux-cluster/bayeux/internal/buildinfo"
	"github.com/bayeux-cluster/bayeux/pkg/auth"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/ext"
	"github.com/bayeux-cluster/bayeux/pkg/cluster"
	"github.com/bayeux-cluster/bayeux/pkg/demo"
	"github.com/bayeux-cluster/bayeux/pkg/metrics"
	"github.com/bayeux-cluster/bayeux/pkg/serverapi/nodeapi"
	"github.com/bayeux-cluster/bayeux/pkg/tracing"
	"github.com/bayeux-cluster/bayeux/pkg/tracing/otlp"
)

// node is one running node: what newNode builds, serve runs and stops.
type node struct {
	c   *config
	log *slog.Logger
	sec *security
	met *metrics.Metrics
	reg *prometheus.Registry
	tr  *tracing.Tracer // nil: tracing off

	eng        engine.Engine
	engineName string
	idPrefix   string
	sessions   *cluster.SessionStore // cluster mode
	b          *broker.Broker
	app        *demo.App // nil with --demo=false
	closers    []func()  // run at the end of serve, last first

	mux          *http.ServeMux
	ready        chan struct{} // closed once serving
	readiness    *cluster.Readiness
	cl           *cluster.Cluster
	gossipFaults *cluster.GossipFaults
	api          *nodeapi.Server // nil with --api-listen ""
}

// newNode loads the key material and builds the engine, the broker and
// the HTTP routes; nothing listens yet.
func newNode(ctx context.Context, c *config, log *slog.Logger) (_ *node, err error) {
	n := &node{c: c, log: log, mux: http.NewServeMux(), ready: make(chan struct{})}
	defer func() {
		if err != nil {
			n.close() // what was built before the error
		}
	}()
	if n.sec, err = loadSecurity(c); err != nil { // before anything needs closing
		return nil, err
	}
	// The node's own registry (never the global default): Go runtime and
	// process collectors plus the broker's (and, in cluster mode, the
	// cluster's) series, served at GET /metrics.
	n.reg = prometheus.NewRegistry()
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n.met = metrics.New(n.reg)
	bi := buildinfo.Read()
	n.met.BuildInfo(bi.Version, bi.Revision, bi.GoVersion)

	c.Tracing.NodeID, c.Tracing.Logger = c.NodeID, log.With("component", "tracing")
	tr, stopTracing, err := otlp.Setup(ctx, c.Tracing)
	if err != nil {
		return nil, err
	}
	n.tr = tr
	n.closers = append(n.closers, func() { // runs last: flushes the spans of the shutdown
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.ShutdownGrace)
		defer cancel()
		if err := stopTracing(sctx); err != nil {
			log.Warn("tracing shutdown", "err", err)
		}
	})
	if err = n.newEngine(ctx); err != nil {
		return nil, err
	}
	if err = n.newBroker(); err != nil {
		return nil, err
	}
	if c.Demo {
		// The browser demo (chat, cluster page) at /; in cluster mode its
		// member registry lives in the engine's Redis.
		if n.app, err = demo.New(demo.Config{Broker: n.b, Path: c.Path, NodeID: c.NodeID, Tag: n.idPrefix, Engine: n.eng, Logger: log.With("component", "demo")}); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
	}
	n.routes()
	return n, nil
}

func (n *node) close() {
	for i := len(n.closers) - 1; i >= 0; i-- {
		n.closers[i]()
	}
	n.closers = nil
}

// newEngine builds the in-memory engine, or in cluster mode (--redis) the
// Redis engine and the session store.
func (n *node) newEngine(ctx context.Context) error {
	c := n.c
	rules, err := engine.ParseRetentionRules(c.Retention)
	if err != nil {
		return err
	}
	retention, err := engine.NewRetention(engine.RetentionRule{Pattern: "/**", Size: c.HistorySize, TTL: c.HistoryTTL}, rules)
	if err != nil {
		return err
	}
	if c.Redis == "" {
		n.eng, n.engineName = engine.NewMemory(engine.MemoryConfig{Retention: retention}), "memory"
		n.closers = append(n.closers, func() { _ = n.eng.Close() })
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	r, err := cluster.NewRedis(sctx, cluster.RedisConfig{URL: c.Redis, WaitReplicas: c.RedisWaitReplicas, PipelineSize: c.RedisPipelineSize, PipelineDelay: c.RedisPipelineDelay, Retention: retention, Logger: n.log.With("component", "redis"), Observer: n.met, Tracer: n.tr})
	cancel()
	if err != nil {
		return err
	}
	n.eng, n.engineName, n.idPrefix = r, "redis", cluster.NodeTag(c.NodeID)
	n.closers = append(n.closers, func() { _ = n.eng.Close() })
	ttl := c.SessionTTL
	if ttl <= 0 {
		ttl = 3 * c.MaxInterval
	}
	n.sessions = cluster.NewSessionStore(r.Client(), "", n.idPrefix, ttl)
	n.met.RegisterCluster()
	return nil
}

// newBroker builds the broker with the authentication policy and the
// extensions.
func (n *node) newBroker() error {
	c := n.c
	proxies, err := c.trustedProxies()
	if err != nil {
		return err
	}
	pol, err := auth.Build(c.Auth)
	if err != nil {
		return err
	}
	var policy broker.Policy // nil: allow all
	exts := []broker.Extension{ext.Ack{}, ext.Replay{}, ext.TimeSync{}}
	keepHeaders := []string{} // sessions keep only what the policy reads
	if pol != nil {
		keepHeaders = pol.RequestHeaders()
		n.closers = append(n.closers, pol.Close)
		policy = pol
		exts = append(exts, pol.Extension()) // last: attaches the identity before the others see the reply
	}
	n.b, err = broker.New(broker.Config{
		KeepHeaders:                 keepHeaders,
		IDPrefix:                    n.idPrefix,
		Engine:                      n.eng,
		Logger:                      n.log,
		Timeout:                     c.Timeout,
		Interval:                    c.Interval,
		MaxInterval:                 c.MaxInterval,
		MaxQueueMessages:            c.MaxQueue,
		PublishRate:                 c.PublishRate,
		MaxSessionsPerBrowser:       c.MaxSessionsPerBrowser,
		MaxSessionsPerIP:            c.MaxSessionsPerIP,
		MaxHeldPerIP:                c.MaxHeldPerIP,
		TrustedProxies:              proxies,
		MaxRequestBytes:             c.MaxRequest,
		WebSocketFrameTimeout:       c.WSFrameTimeout,
		AllowedOrigins:              c.origins(),
		CookieSecure:                c.CookieSecure || n.sec.httpTLS != nil,
		Hosts:                       splitList(c.AdviceHosts),
		DrainJitter:                 c.DrainJitter,
		HandOverHold:                handOverHold(c.HandOverHold),
		ReorderWindow:               c.ReorderWindow,
		DisableWebSocketCompression: !c.WSCompression,
		PeerLossGrace:               c.PeerLossGrace,
		Extensions:                  exts,
		Policy:                      policy,
		Observer:                    n.met,
		Tracer:                      n.tr,
	})
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	n.met.QueuedMessages(func() float64 { return float64(n.b.QueuedMessages()) })
	return nil
}

// routes registers the Bayeux endpoint, the demo, metrics, health and the
// optional profiling and debug endpoints.
func (n *node) routes() {
	c, mux, b := n.c, n.mux, n.b
	mux.Handle(c.Path, b)
	mux.Handle(c.Path+"/", b)
	if n.app != nil {
		mux.Handle("/", n.app)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	// Ready: see cluster.Readiness (a backplane outage is reported, not
	// made unready).
	n.readiness = cluster.NewReadiness(b.ShuttingDown, n.eng)
	mux.Handle("GET /readyz", n.readiness)
	if c.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if c.DebugAPI {
		if c.Redis != "" {
			n.gossipFaults = &cluster.GossipFaults{}
		}
		registerGossipDebug(mux, n.gossipFaults)
		_ = b.HandleDebugServices() // /service/echo: a fixed, valid pattern (cannot fail)
		mux.Handle("/debug/bayeux/", http.StripPrefix("/debug/bayeux", b.DebugHandler()))
		mux.HandleFunc("GET /debug/bayeux/members", func(w http.ResponseWriter, _ *http.Request) {
			var members []cluster.Meta
			if n.cl != nil { // set before serving, in cluster mode
				members = n.cl.Members()
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"members": members})
		})
		n.log.Warn("debug API enabled: never expose this node in production", "path", "/debug/bayeux/")
	}
}

// serve listens, joins the cluster (cluster mode), prints the URLs and
// serves until ctx ends, then shuts down within --shutdown-grace.
func (n *node) serve(ctx context.Context, stdout io.Writer) error {
	defer n.close()
	c := n.c
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", c.Listen, err)
	}
	srv := &http.Server{
		Handler:           n.mux,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout, // a held connect is not bounded: net/http clears the deadline once the body is read
		IdleTimeout:       c.IdleTimeout,
		TLSConfig:         n.sec.httpTLS,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	if c.Redis != "" {
		if err := n.startCluster(runCtx, stdout); err != nil {
			_ = ln.Close()
			return err
		}
	}
	if n.api, err = n.startAPI(runCtx, stdout); err != nil {
		_ = ln.Close()
		return err
	}
	defer n.stopAPI()
	brokerDone := make(chan error, 1)
	go func() { brokerDone <- n.b.Run(runCtx) }()
	if n.app != nil {
		go n.app.Run(runCtx)
	}
	serveDone := make(chan error, 1)
	scheme := "http://"
	if n.sec.httpTLS != nil {
		scheme = "https://"
		go func() { serveDone <- srv.ServeTLS(ln, "", "") }() // certificates in srv.TLSConfig
	} else {
		go func() { serveDone <- srv.Serve(ln) }()
	}
	base := scheme + displayAddr(ln.Addr())
	close(n.ready)
	n.readiness.Started()
	printURLs(stdout, n.urls(base))
	n.log.Info("serving", "url", base+c.Path, "engine", n.engineName)

	select {
	case <-ctx.Done():
	case err := <-serveDone:
		return fmt.Errorf("http server: %w", err)
	case err := <-brokerDone:
		return fmt.Errorf("broker stopped: %w", err)
	}
	n.shutdown(srv, cancelRun, brokerDone)
	return nil
}

// startCluster starts gossip and node-to-node gRPC and prints their
// addresses.
func (n *node) startCluster(ctx context.Context, stdout io.Writer) error {
	c := n.c
	cl, err := cluster.Start(ctx, cluster.Config{
		NodeID: c.NodeID, GossipListen: c.GossipListen, GRPCListen: c.GRPCListen,
		Advertise: c.Advertise, Join: c.seeds(), FastGossip: c.GossipFast, LeaseTTL: c.LeaseTTL, Logger: n.log, Sessions: n.sessions,
		GossipFaults: n.gossipFaults,
		Observer:     n.met,
		ServerTLS:    n.sec.grpcServer,
		ClientTLS:    n.sec.grpcClient,
		GossipKeys:   n.sec.gossipKeys,
		Tracer:       n.tr,
	}, n.b)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	n.cl = cl
	fmt.Fprintf(stdout, "bayeux node gossip %s grpc %s tag %s\n", cl.GossipAddr(), cl.GRPCAddr(), cl.Tag())
	n.met.GossipHealth(func() float64 { return float64(cl.HealthScore()) })
	n.readiness.SetCluster(cl)
	n.met.Backplane(n.readiness.BackplaneUp, n.readiness.Joined)
	return nil
}

// shutdown drains the broker (held connects get "retry" advice, sessions
// are handed off), stops HTTP and the cluster within --shutdown-grace.
func (n *node) shutdown(srv *http.Server, cancelRun context.CancelFunc, brokerDone <-chan error) {
	n.log.Info("shutting down", "grace", n.c.ShutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), n.c.ShutdownGrace)
	defer cancel()
	if n.cl != nil {
		n.cl.Draining()
	}
	if err := n.b.Shutdown(sctx); err != nil {
		n.log.Warn("broker shutdown incomplete", "err", err)
	}
	if err := srv.Shutdown(sctx); err != nil {
		n.log.Warn("http shutdown incomplete", "err", err)
	}
	if err := n.api.Shutdown(sctx); err != nil {
		n.log.Warn("api shutdown incomplete", "err", err)
	}
	if n.cl != nil {
		n.cl.Stop(sctx)
	}
	cancelRun()
	<-brokerDone
	n.close()
	n.log.Info("stopped")
}

// startAPI starts the server API listener (--api-listen; package
// serverapi/nodeapi) and prints its address.
func (n *node) startAPI(ctx context.Context, stdout io.Writer) (*nodeapi.Server, error) {
	c := n.c
	return nodeapi.Start(ctx, nodeapi.Options{Listen: c.APIListen, KeyFile: c.APIKeyFile, Broker: n.b, Engine: n.eng, Cluster: n.cl,
		NodeID: c.NodeID, BayeuxPath: c.Path, MaxBodyBytes: c.MaxRequest, Rate: c.APIRate, Registry: n.reg, Logger: n.log,
		Stdout: stdout, ClientJS: demo.ClientJS()})
}

// stopAPI stops the API listener if shutdown did not (an early return).
func (n *node) stopAPI() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = n.api.Shutdown(ctx)
}
