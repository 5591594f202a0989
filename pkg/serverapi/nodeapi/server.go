package nodeapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bayeux-cluster/bayeux/internal/buildinfo"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/cluster"
	"github.com/bayeux-cluster/bayeux/pkg/serverapi"
)

// Options configures the API of a node.
type Options struct {
	Listen  string // host:port; "" disables the API listener
	KeyFile string // "" refuses every call (with a how-to message)
	Broker  *broker.Broker
	Engine  engine.Engine
	Cluster *cluster.Cluster // nil on a single node
	NodeID  string
	// BayeuxPath is where the node's Bayeux endpoint is (also served on
	// the API listener for the admin console).
	BayeuxPath   string
	MaxBodyBytes int64
	Rate         float64 // API calls per second (0: the default)
	Registry     prometheus.Registerer
	Logger       *slog.Logger
	Stdout       io.Writer // "bayeux node api URL" is printed here once listening
	ClientJS     []byte    // the browser Bayeux client, for the admin console
}

// Server is a running API listener.
type Server struct {
	srv  *http.Server
	done chan error
	stop context.CancelFunc
	once sync.Once
	err  error
	url  string
}

// URL is the listener's base URL (http://host:port).
func (s *Server) URL() string { return s.url }

// Start listens and serves the API until Shutdown. With Listen "" it
// returns a nil *Server (whose Shutdown does nothing).
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Listen == "" {
		return nil, nil
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "api")
	var keys *serverapi.Keys
	if o.KeyFile != "" {
		var err error
		if keys, err = serverapi.LoadKeys(o.KeyFile); err != nil {
			return nil, err
		}
	} else {
		log.Warn("server API refuses every call: no --api-key-file")
	}
	nodeID := o.NodeID
	if nodeID == "" {
		nodeID = "standalone"
	}
	l := &local{b: o.Broker, eng: o.Engine, id: nodeID, version: version()}
	var p serverapi.Peers
	if o.Cluster != nil {
		p = peers{cl: o.Cluster}
		l.tag = o.Cluster.Tag()
	}
	svc := serverapi.NewService(serverapi.ServiceConfig{Publisher: l, History: l, Presence: l, SessionControl: l, Stats: l,
		Peers: p, NodeID: nodeID, Logger: log})
	h := serverapi.NewHandler(serverapi.HandlerConfig{Service: svc, Keys: keys, Registry: o.Registry, Logger: log,
		MaxBodyBytes: o.MaxBodyBytes, Rate: o.Rate, Bayeux: o.Broker, BayeuxPath: o.BayeuxPath, ClientJS: o.ClientJS})
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("api listen %s: %w", o.Listen, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true) // gRPC without TLS (inside the cluster)
	rctx, stop := context.WithCancel(ctx)
	s := &Server{srv: srv, done: make(chan error, 1), stop: stop}
	go l.sample(rctx, 5*time.Second)
	if keys != nil {
		go reloadOnHUP(rctx, keys, log)
	}
	go func() { s.done <- srv.Serve(ln) }()
	url := "http://" + ln.Addr().String()
	s.url = url
	if o.Stdout != nil {
		fmt.Fprintf(o.Stdout, "bayeux node api %s\n", url)
	}
	log.Info("server API serving", "url", url+"/api/v1/", "admin", url+"/admin/")
	return s, nil
}

// reloadOnHUP re-reads the key file on each SIGHUP until ctx ends.
func reloadOnHUP(ctx context.Context, keys *serverapi.Keys, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := keys.Reload(); err != nil {
				log.Error("API key file not reloaded; the previous keys stay", "err", err)
				continue
			}
			log.Info("API key file reloaded", "keys", keys.Len())
		}
	}
}

// Shutdown stops the listener within ctx. Later calls return the first
// call's result.
func (s *Server) Shutdown(ctx context.Context) error {
	if s == nil {
		return nil
	}
	s.once.Do(func() {
		defer s.stop()
		s.err = s.srv.Shutdown(ctx)
		if serr := <-s.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) && s.err == nil {
			s.err = serr
		}
	})
	return s.err
}

func version() string { return buildinfo.Read().Version }
