package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	clusterv1 "github.com/bayeux-cluster/bayeux/api/proto/cluster/v1"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/tracing"
)

// Config configures a cluster node's membership and node-to-node API.
type Config struct {
	NodeID       string
	GossipListen string   // e.g. ":7946" or "127.0.0.1:0"
	GRPCListen   string   // e.g. ":7947" or "127.0.0.1:0"
	Advertise    string   // host (or IP) peers reach this node at; default: the bound address
	Join         []string // gossip seeds
	FastGossip   bool     // shorter gossip timers (tests)
	// LeaseTTL, if positive, replaces the node lease's default time to
	// live (1.5 s with FastGossip, 5 s otherwise); it is renewed every
	// fifth of it. Longer means fewer Redis commands and a later adoption
	// of a frozen or cut-off node's sessions (adopters wait for the lease).
	LeaseTTL time.Duration
	Logger   *slog.Logger
	Observer Observer // optional: forwards and membership size
	// Sessions, if set, makes sessions survive the loss of their owner:
	// records for adoption, and drain hand-off.
	Sessions *SessionStore
	// GossipFaults, if set, lets the debug API cut this node's gossip off
	// (chaos tests). Never set in production.
	GossipFaults *GossipFaults
	// ServerTLS and ClientTLS, if set, secure node-to-node gRPC with mutual
	// TLS (see LoadTLS): set both or neither.
	ServerTLS, ClientTLS *tls.Config
	// GossipKeys, if set, encrypt gossip (see MembershipConfig.Keys).
	GossipKeys [][]byte
	// Tracer, if not nil, traces node-to-node gRPC (server and client),
	// propagating the trace context in gRPC metadata.
	Tracer *tracing.Tracer
}

// Broker is everything this package calls on the broker: the one narrow
// interface of the seam (*broker.Broker implements it). The other way,
// the broker calls this package only through the interfaces it defines
// (broker.Router with broker.Members, broker.SessionStore,
// broker.HandOverStore, broker.Fence, engine.Engine); adoption is decided
// and done in the broker (pkg/broker/adopt*.go).
type Broker interface {
	// Config gives the broker's IDPrefix (it must be the node tag).
	Config() broker.Config
	// SetCluster installs the router and session store, before serving.
	SetCluster(broker.Router, broker.SessionStore)
	// PeerLost tells the broker that a peer left (its expiry grace).
	PeerLost(now time.Time)
	// ServeForwarded and LocalSessionOp serve what peers forward (rpc.go).
	ServeForwarded(context.Context, *broker.ForwardedRequest) (*broker.ForwardedResponse, error)
	LocalSessionOp(clientID string, op broker.SessionOpKind) (bool, error)
}

var _ Broker = (*broker.Broker)(nil)

// Cluster joins a broker to its peers: it serves the Node gRPC API, keeps
// membership, and carries requests for sessions owned elsewhere (router.go
// is the broker's Router).
type Cluster struct {
	cfg   Config
	log   *slog.Logger
	b     Broker
	tag   string
	mem   *Membership
	grpc  *grpc.Server
	gln   net.Listener
	hs    *health.Server
	peers *peers
	calls calls
	node  *nodeServer
}

// Start starts the gRPC server and gossip for b (whose Config.IDPrefix must
// be NodeTag(cfg.NodeID)) and installs itself as b's Router. Joining the
// seeds continues in the background until it succeeds or ctx ends.
func Start(ctx context.Context, cfg Config, b Broker) (*Cluster, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tag := NodeTag(cfg.NodeID)
	if (cfg.ServerTLS == nil) != (cfg.ClientTLS == nil) {
		return nil, errors.New("cluster: set both ServerTLS and ClientTLS, or neither")
	}
	if b.Config().IDPrefix != tag {
		return nil, fmt.Errorf("cluster: broker IDPrefix %q must be the node tag %q", b.Config().IDPrefix, tag)
	}
	c := &Cluster{cfg: cfg, log: cfg.Logger, b: b, tag: tag, peers: newPeers(cfg.ClientTLS, grpcClientTracing(cfg.Tracer))}
	ln, err := net.Listen("tcp", cfg.GRPCListen)
	if err != nil {
		return nil, fmt.Errorf("grpc listen %s: %w", cfg.GRPCListen, err)
	}
	c.gln = ln
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxRPCMessage), grpc.MaxSendMsgSize(maxRPCMessage),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second}),
		grpc.InitialWindowSize(grpcStreamWindow), grpc.InitialConnWindowSize(grpcConnWindow),
	}
	if cfg.ServerTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.ServerTLS)))
	}
	c.grpc = grpc.NewServer(append(opts, grpcServerTracing(cfg.Tracer)...)...)
	c.node = &nodeServer{b: b, calls: &c.calls, tracer: cfg.Tracer, stopping: make(chan struct{})}
	clusterv1.RegisterNodeServer(c.grpc, c.node)
	c.hs = health.NewServer()
	healthpb.RegisterHealthServer(c.grpc, c.hs)

	grpcAddr, err := advertised(ln.Addr(), cfg.Advertise)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	mem, err := NewMembership(MembershipConfig{
		Self:     Meta{ID: cfg.NodeID, Tag: tag, GRPC: grpcAddr, Proto: ProtocolVersion},
		Listen:   cfg.GossipListen,
		Advert:   cfg.Advertise,
		Join:     cfg.Join,
		Fast:     cfg.FastGossip,
		Logger:   cfg.Logger.With("component", "gossip"),
		Observer: cfg.Observer,
		// Sessions outlast the clients' back-off against the lost peer
		// that the balancer keeps sending requests to (broker grace.go).
		OnPeerLost: func() { b.PeerLost(time.Now()) },
		Faults:     cfg.GossipFaults,
		Keys:       cfg.GossipKeys,
		OnDepart:   func(m Meta) { c.peers.drop(m.GRPC) },
	})
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	c.mem = mem
	var store broker.SessionStore
	if cfg.Sessions != nil {
		store = cfg.Sessions
		// The lease is taken before the broker is given the store: a
		// node acts on sessions only while it holds it (lease.go).
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := cfg.Sessions.StartLease(actx, ctx, cfg.FastGossip, cfg.LeaseTTL, cfg.Logger.With("component", "lease"))
		cancel()
		if err != nil {
			c.log.Warn("node lease not taken yet; retrying", "err", err)
		}
	}
	// The router and store are installed before the gRPC server serves
	// (starting its goroutine orders the two): a peer's forwarded request
	// never meets a half-installed broker. Gossip only updates membership,
	// which does not touch the broker.
	b.SetCluster(router{c}, store)
	go func() {
		if err := c.grpc.Serve(ln); err != nil {
			c.log.Error("grpc server stopped", "err", err)
		}
	}()
	c.hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	go func() {
		if err := mem.Join(ctx); err != nil {
			c.log.Error("could not join the cluster", "err", err)
		}
	}()
	reconnect := 10 * time.Second
	if cfg.FastGossip {
		reconnect = time.Second
	}
	go mem.Reconnect(ctx, reconnect)
	return c, nil
}

// advertised builds host:port from the listener's port and the advertise
// host (or the listener's own address when none is given).
// With no advertise host and a wildcard listener, the first non-loopback
// interface address is used, so peers on other hosts can reach it.
func advertised(a net.Addr, advertise string) (string, error) {
	tcp := a.(*net.TCPAddr)
	host := advertise
	if h, _, err := net.SplitHostPort(advertise); err == nil {
		host = h
	}
	if host != "" {
		ip, err := resolveIP(host)
		if err != nil {
			return "", fmt.Errorf("advertise: %w", err)
		}
		host = ip
	} else {
		host = tcp.IP.String()
		if tcp.IP.IsUnspecified() {
			host = firstNonLoopback()
		}
	}
	return net.JoinHostPort(host, fmt.Sprint(tcp.Port)), nil
}

func firstNonLoopback() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

// Tag returns this node's tag.
func (c *Cluster) Tag() string { return c.tag }

// GossipAddr returns the advertised gossip address.
func (c *Cluster) GossipAddr() string { return c.mem.Addr() }

// GRPCAddr returns the gRPC listen address.
func (c *Cluster) GRPCAddr() string { return c.gln.Addr().String() }

// Members returns the live nodes.
func (c *Cluster) Members() []Meta { return c.mem.Members() }

// HealthScore is memberlist's view of this node's own health: 0 is
// healthy; it grows while this node fails to probe its peers in time (an
// overloaded node, or one cut off).
func (c *Cluster) HealthScore() int { return c.mem.ml.GetHealthScore() }

// Forward implements broker.Router (through router) over the owner's
// forward stream (Node.Forward, one per peer; forward_stream.go).
func (c *Cluster) Forward(ctx context.Context, node string, req *broker.ForwardedRequest) (*broker.ForwardedResponse, error) {
	owner, ok := c.mem.Alive(node)
	if !ok {
		c.observeForward(ForwardNoOwner)
		return nil, errNoOwner
	}
	pc, release, err := c.peers.conn(owner.GRPC)
	if err != nil {
		c.observeForward(ForwardError)
		return nil, err
	}
	defer release()
	ctx, span, traceparent := c.cfg.Tracer.ForwardOut(ctx)
	defer span.End()
	resp, err := pc.forward(ctx, &clusterv1.ProcessRequest{
		ProtocolVersion: ProtocolVersion,
		Transport:       req.Transport,
		Hops:            uint32(req.Hops),
		Parts:           req.Parts,
		BrowserId:       req.BrowserID,
		RemoteAddr:      req.RemoteAddr,
	}, traceparent)
	if err != nil {
		c.observeForward(ForwardError)
		return nil, fmt.Errorf("forward to %s (%s): %w", owner.ID, owner.GRPC, err)
	}
	c.observeForward(ForwardOK)
	return &broker.ForwardedResponse{Body: resp.GetBody(), RateRefused: int(resp.GetRateRefused())}, nil
}

func (c *Cluster) observeForward(result string) {
	if c.cfg.Observer != nil {
		c.cfg.Observer.Forward(result)
	}
}

// SessionOp implements broker.Router (through router).
func (c *Cluster) SessionOp(ctx context.Context, node, clientID string, op broker.SessionOpKind) (bool, error) {
	owner, ok := c.mem.Alive(node)
	if !ok {
		return false, nil
	}
	client, release, err := c.peers.client(owner.GRPC)
	if err != nil {
		return false, err
	}
	defer release()
	resp, err := client.SessionOp(ctx, &clusterv1.SessionOpRequest{ProtocolVersion: ProtocolVersion, ClientId: clientID, Op: string(op)})
	if err != nil {
		return false, fmt.Errorf("session op on %s: %w", owner.ID, err)
	}
	return resp.GetFound(), nil
}

// Draining tells the peers that this node is about to leave on purpose
// (its departure is no failure). Stop completes it; calling it at the
// start of a drain lets the announcement travel meanwhile.
func (c *Cluster) Draining() { c.mem.AnnounceLeaving(time.Second) }

// stopWait bounds how long Stop lets the gRPC calls in flight end: by
// then a drained node's forwarded connects were released (broker
// Shutdown), so what is left is cut.
const stopWait = 2 * time.Second

// Stop leaves the cluster and stops the gRPC server: after the calls in
// flight end, or after stopWait (or ctx) it cuts them. It closes every
// connection to the peers.
func (c *Cluster) Stop(ctx context.Context) {
	c.hs.Shutdown()
	_ = c.mem.Leave(time.Second)
	c.node.stop() // forward streams end once answered
	done := make(chan struct{})
	go func() { c.grpc.GracefulStop(); close(done) }()
	t := time.NewTimer(stopWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		c.log.Warn("grpc calls still in flight; stopping", "after", stopWait)
		c.grpc.Stop()
	case <-ctx.Done():
		c.grpc.Stop()
	}
	c.peers.close()
}
