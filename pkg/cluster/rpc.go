package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/bayeux-cluster/bayeux/api/proto/cluster/v1"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/tracing"
)

// maxRPCMessage bounds a forwarded request or response (a connect reply may
// carry a whole session queue).
const maxRPCMessage = 64 << 20

// Flow-control windows of the node-to-node gRPC connections, in both
// directions. Setting them turns gRPC's bandwidth estimation off, which
// otherwise sends a ping, and has it answered, for each message received:
// four HTTP/2 frames (and their reads and writes) on a forwarded request
// of a few hundred bytes. Nodes of one cluster share a network where
// these windows do not limit throughput.
const (
	grpcStreamWindow = 4 << 20
	grpcConnWindow   = 16 << 20
)

// nodeServer serves the Node gRPC service for the local broker.
type nodeServer struct {
	clusterv1.UnimplementedNodeServer
	b      Broker
	calls  *calls
	tracer *tracing.Tracer // per forwarded request on Forward streams; nil: off
	// stopping, once closed, has Forward streams take no new request and
	// end once the requests in flight are answered (the node stops).
	stopping chan struct{}
	stopOnce sync.Once
}

// stop closes stopping (once).
func (s *nodeServer) stop() { s.stopOnce.Do(func() { close(s.stopping) }) }

// isStopping reports whether stop was called (never, without stopping).
func (s *nodeServer) isStopping() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

var _ clusterv1.NodeServer = (*nodeServer)(nil)

func (s *nodeServer) Process(ctx context.Context, req *clusterv1.ProcessRequest) (*clusterv1.ProcessResponse, error) {
	return s.process(ctx, req)
}

// process serves one forwarded request (Process, or one of a Forward
// stream), failing with the status the caller sees: Aborted for a reply
// the debug API dropped, Unavailable for a reply lost on a further hop,
// the context's for a request cancelled, InvalidArgument otherwise.
func (s *nodeServer) process(ctx context.Context, req *clusterv1.ProcessRequest) (*clusterv1.ProcessResponse, error) {
	if req.GetProtocolVersion() != ProtocolVersion {
		return nil, status.Errorf(codes.FailedPrecondition, "protocol version %d not supported (want %d)", req.GetProtocolVersion(), ProtocolVersion)
	}
	resp, err := s.b.ServeForwarded(ctx, &broker.ForwardedRequest{
		Transport:  req.GetTransport(),
		Parts:      req.GetParts(),
		BrowserID:  req.GetBrowserId(),
		RemoteAddr: req.GetRemoteAddr(),
		Hops:       int(req.GetHops()),
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		if errors.Is(err, broker.ErrReplyDropped) {
			return nil, status.Error(codes.Aborted, err.Error())
		}
		if errors.Is(err, broker.ErrReplyLost) {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &clusterv1.ProcessResponse{Body: resp.Body, RateRefused: uint32(resp.RateRefused)}, nil
}

func (s *nodeServer) SessionOp(_ context.Context, req *clusterv1.SessionOpRequest) (*clusterv1.SessionOpResponse, error) {
	if req.GetProtocolVersion() != ProtocolVersion {
		return nil, status.Errorf(codes.FailedPrecondition, "protocol version %d not supported (want %d)", req.GetProtocolVersion(), ProtocolVersion)
	}
	found, err := s.b.LocalSessionOp(req.GetClientId(), broker.SessionOpKind(req.GetOp()))
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &clusterv1.SessionOpResponse{Found: found}, nil
}

// peers keeps one gRPC client connection per peer address.
type peers struct {
	creds credentials.TransportCredentials
	extra []grpc.DialOption // tracing
	mu    sync.Mutex
	conns map[string]*peerConn
}

// peerConn is a connection and its calls in flight: a connection to a
// peer that departed is closed once its last call ends, so that the
// answers of a draining peer (held connects it releases) still arrive.
type peerConn struct {
	cc       *grpc.ClientConn
	inflight int
	departed bool

	fwdMu sync.Mutex // held while opening fwd
	fwd   *fwdStream // forwarded requests; nil until the first, replaced once broken
}

// stream returns pc's forward stream, opening one if it has none or
// its last one broke (ctx bounds the opening).
func (pc *peerConn) stream(ctx context.Context) (*fwdStream, error) {
	pc.fwdMu.Lock()
	defer pc.fwdMu.Unlock()
	if pc.fwd != nil && !pc.fwd.broken() {
		return pc.fwd, nil
	}
	s, err := openFwdStream(ctx, pc.cc)
	if err != nil {
		return nil, err
	}
	pc.fwd = s
	return s, nil
}

// forward sends req over pc's forward stream, opening one if needed
// (after a broken one: the peer is dialled again).
func (pc *peerConn) forward(ctx context.Context, req *clusterv1.ProcessRequest, traceparent string) (*clusterv1.ProcessResponse, error) {
	s, err := pc.stream(ctx)
	if err != nil {
		return nil, err
	}
	return s.call(ctx, req, traceparent)
}

// close closes pc's connection (its forward stream with it).
func (pc *peerConn) close() {
	pc.fwdMu.Lock()
	if pc.fwd != nil {
		pc.fwd.close()
	}
	pc.fwdMu.Unlock()
	_ = pc.cc.Close()
}

// newPeers dials peers with mutual TLS when tlsCfg is set, else in
// plaintext (a private network), adding extra options.
func newPeers(tlsCfg *tls.Config, extra []grpc.DialOption) *peers {
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	return &peers{creds: creds, extra: extra, conns: map[string]*peerConn{}}
}

// client returns a client of the peer at addr for one call; the caller
// calls release when the call ended.
func (p *peers) client(addr string) (c clusterv1.NodeClient, release func(), err error) {
	pc, release, err := p.conn(addr)
	if err != nil {
		return nil, nil, err
	}
	return clusterv1.NewNodeClient(pc.cc), release, nil
}

// conn returns the connection to the peer at addr for one call (or one
// forwarded request); the caller calls release when the call ended.
func (p *peers) conn(addr string) (*peerConn, func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.conns[addr]
	if pc == nil {
		cc, err := grpc.NewClient(addr, append([]grpc.DialOption{
			grpc.WithTransportCredentials(p.creds),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRPCMessage), grpc.MaxCallSendMsgSize(maxRPCMessage)),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: false}),
			grpc.WithInitialWindowSize(grpcStreamWindow), grpc.WithInitialConnWindowSize(grpcConnWindow),
		}, p.extra...)...)
		if err != nil {
			return nil, nil, fmt.Errorf("grpc client %s: %w", addr, err)
		}
		pc = &peerConn{cc: cc}
		p.conns[addr] = pc
	}
	pc.inflight++
	return pc, func() { p.release(pc) }, nil
}

func (p *peers) release(pc *peerConn) {
	p.mu.Lock()
	pc.inflight--
	closeNow := pc.departed && pc.inflight == 0
	p.mu.Unlock()
	if closeNow {
		go pc.close() // Close waits for the connection's goroutines
	}
}

// drop forgets the connection to addr (the peer left or failed) and
// closes it once its calls in flight ended; a later call dials again, as
// after a partition heals.
func (p *peers) drop(addr string) {
	p.mu.Lock()
	pc := p.conns[addr]
	delete(p.conns, addr)
	closeNow := false
	if pc != nil {
		pc.departed = true
		closeNow = pc.inflight == 0
	}
	p.mu.Unlock()
	if closeNow {
		go pc.close()
	}
}

// open returns the number of peer connections not yet closed or closing.
func (p *peers) open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// close closes every connection (the node stops), calls in flight
// included.
func (p *peers) close() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[string]*peerConn{}
	p.mu.Unlock()
	for _, pc := range conns {
		pc.close()
	}
}

// errNoOwner means the session's owner is not a live member.
var errNoOwner = errors.New("cluster: session owner not alive")
