package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bayeux-cluster/bayeux/pkg/auth"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/ext"
	"github.com/bayeux-cluster/bayeux/pkg/cluster"
	"github.com/bayeux-cluster/bayeux/pkg/demo"
	"github.com/bayeux-cluster/bayeux/pkg/metrics"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "sleep" {
		// "node sleep 5s": the Kubernetes preStop hook of a distroless
		// image (no shell, no sleep binary) keeps the pod serving while
		// endpoints stop sending it traffic, before SIGTERM starts the drain.
		d, err := time.ParseDuration(os.Args[2])
		if err != nil || d < 0 || d > 5*time.Minute {
			fmt.Fprintln(os.Stderr, "node sleep: want a duration between 0 and 5m")
			os.Exit(2)
		}
		time.Sleep(d)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "node:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func newLogger(c *config, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// run starts the node and blocks until ctx is cancelled (a signal), then
// shuts down within the grace period.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, err := parseConfig(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flagHelp) {
			return nil
		}
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	log := newLogger(c, stderr)
	if c.GCPercent > 0 && getenv("GOGC") == "" {
		debug.SetGCPercent(c.GCPercent)
	}
	sec, err := loadSecurity(c) // before anything needs closing
	if err != nil {
		return err
	}
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
		defer pol.Close()
		policy = pol
		exts = append(exts, pol.Extension()) // last: attaches the identity before the others see the reply
	}

	// The node's own registry (never the global default): Go runtime and
	// process collectors plus the broker's (and, in cluster mode, the
	// cluster's) series, served at GET /metrics.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	met := metrics.New(reg)

	rules, err := engine.ParseRetentionRules(c.Retention)
	if err != nil {
		return err
	}
	retention, err := engine.NewRetention(engine.RetentionRule{Pattern: "/**", Size: c.HistorySize, TTL: c.HistoryTTL}, rules)
	if err != nil {
		return err
	}
	var eng engine.Engine = engine.NewMemory(engine.MemoryConfig{Retention: retention})
	engineName, idPrefix := "memory", ""
	var sessions *cluster.SessionStore
	if c.Redis != "" {
		if c.NodeID == "" {
			c.NodeID = defaultNodeID()
		}
		log = log.With("node", c.NodeID)
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		r, err := cluster.NewRedis(sctx, cluster.RedisConfig{URL: c.Redis, Retention: retention, Logger: log.With("component", "redis"), Observer: met})
		cancel()
		if err != nil {
			return err
		}
		eng, engineName, idPrefix = r, "redis", cluster.NodeTag(c.NodeID)
		ttl := c.SessionTTL
		if ttl <= 0 {
			ttl = 3 * c.MaxInterval
		}
		sessions = cluster.NewSessionStore(r.Client(), "", idPrefix, ttl)
		met.RegisterCluster()
	}
	b, err := broker.New(broker.Config{
		KeepHeaders:           keepHeaders,
		IDPrefix:              idPrefix,
		Engine:                eng,
		Logger:                log,
		Timeout:               c.Timeout,
		Interval:              c.Interval,
		MaxInterval:           c.MaxInterval,
		MaxQueueMessages:      c.MaxQueue,
		PublishRate:           c.PublishRate,
		MaxSessionsPerBrowser: c.MaxSessionsPerBrowser,
		MaxSessionsPerIP:      c.MaxSessionsPerIP,
		MaxHeldPerIP:          c.MaxHeldPerIP,
		TrustedProxies:        proxies,
		MaxRequestBytes:       c.MaxRequest,
		WebSocketFrameTimeout: c.WSFrameTimeout,
		AllowedOrigins:        c.origins(),
		CookieSecure:          c.CookieSecure || sec.httpTLS != nil,
		Hosts:                 splitList(c.AdviceHosts),
		DrainJitter:           c.DrainJitter,
		Extensions:            exts,
		Policy:                policy,
		Observer:              met,
	})
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}

	met.QueuedMessages(func() float64 { return float64(b.QueuedMessages()) })
	mux := http.NewServeMux()
	mux.Handle(c.Path, b)
	mux.Handle(c.Path+"/", b)
	// The browser demo (chat, cluster page) at /; in cluster mode its member
	// registry lives in the engine's Redis.
	var app *demo.App
	if c.Demo {
		if app, err = demo.New(demo.Config{Broker: b, Path: c.Path, NodeID: c.NodeID, Tag: idPrefix, Engine: eng, Logger: log.With("component", "demo")}); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		mux.Handle("/", app)
	}
	ready := make(chan struct{})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	// Ready: serving, not shutting down, and (cluster mode) the Redis
	// pub/sub link healthy. A draining node turns unready so balancers and
	// Kubernetes stop sending it new clients.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-ready:
		default:
			http.Error(w, "not ready: starting", http.StatusServiceUnavailable)
			return
		}
		if b.ShuttingDown() {
			http.Error(w, "not ready: shutting down", http.StatusServiceUnavailable)
			return
		}
		if r, ok := eng.(interface{ Ready() bool }); ok && !r.Ready() {
			http.Error(w, "not ready: backplane unavailable", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	if c.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	var cl *cluster.Cluster // set below in cluster mode, before serving
	var gossipFaults *cluster.GossipFaults
	if c.DebugAPI {
		if c.Redis != "" {
			gossipFaults = &cluster.GossipFaults{}
		}
		registerGossipDebug(mux, gossipFaults)
		mux.Handle("/debug/bayeux/", http.StripPrefix("/debug/bayeux", b.DebugHandler()))
		mux.HandleFunc("GET /debug/bayeux/members", func(w http.ResponseWriter, _ *http.Request) {
			var members []cluster.Meta
			if cl != nil {
				members = cl.Members()
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"members": members})
		})
		log.Warn("debug API enabled: never expose this node in production", "path", "/debug/bayeux/")
	}

	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", c.Listen, err)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout, // a held connect is not bounded: net/http clears the deadline once the body is read
		IdleTimeout:       c.IdleTimeout,
		TLSConfig:         sec.httpTLS,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	if c.Redis != "" {
		cl, err = cluster.Start(runCtx, cluster.Config{
			NodeID: c.NodeID, GossipListen: c.GossipListen, GRPCListen: c.GRPCListen,
			Advertise: c.Advertise, Join: c.seeds(), FastGossip: c.GossipFast, Logger: log, Sessions: sessions,
			GossipFaults: gossipFaults,
			Observer:     met,
			ServerTLS:    sec.grpcServer,
			ClientTLS:    sec.grpcClient,
			GossipKeys:   sec.gossipKeys,
		}, b)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("cluster: %w", err)
		}
		fmt.Fprintf(stdout, "bayeux node gossip %s grpc %s tag %s\n", cl.GossipAddr(), cl.GRPCAddr(), cl.Tag())
		met.GossipHealth(func() float64 { return float64(cl.HealthScore()) })
	}
	brokerDone := make(chan error, 1)
	go func() { brokerDone <- b.Run(runCtx) }()
	if app != nil {
		go app.Run(runCtx)
	}
	serveDone := make(chan error, 1)
	scheme := "http://"
	if sec.httpTLS != nil {
		scheme = "https://"
		go func() { serveDone <- srv.ServeTLS(ln, "", "") }() // certificates in srv.TLSConfig
	} else {
		go func() { serveDone <- srv.Serve(ln) }()
	}

	url := scheme + displayAddr(ln.Addr()) + c.Path
	close(ready)
	fmt.Fprintf(stdout, "bayeux node serving %s\n", url)
	log.Info("serving", "url", url, "engine", engineName)

	select {
	case <-ctx.Done():
	case err := <-serveDone:
		return fmt.Errorf("http server: %w", err)
	case err := <-brokerDone:
		return fmt.Errorf("broker stopped: %w", err)
	}
	log.Info("shutting down", "grace", c.ShutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownGrace)
	defer cancel()
	if err := b.Shutdown(sctx); err != nil {
		log.Warn("broker shutdown incomplete", "err", err)
	}
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown incomplete", "err", err)
	}
	if cl != nil {
		cl.Stop(sctx)
	}
	cancelRun()
	<-brokerDone
	_ = eng.Close()
	log.Info("stopped")
	return nil
}

// defaultNodeID is the hostname plus a random suffix: unique per process
// incarnation, so a restarted node gets a new tag.
func defaultNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// displayAddr turns a listener address into a host:port a browser can use.
func displayAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	host := tcp.IP.String()
	if tcp.IP == nil || tcp.IP.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, fmt.Sprint(tcp.Port))
}
