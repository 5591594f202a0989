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
)

// maxRPCMessage bounds a forwarded request or response (a connect reply may
// carry a whole session queue).
const maxRPCMessage = 64 << 20

// nodeServer serves the Node gRPC service for the local broker.
type nodeServer struct {
	clusterv1.UnimplementedNodeServer
	b *broker.Broker
}

var _ clusterv1.NodeServer = (*nodeServer)(nil)

func (s *nodeServer) Process(ctx context.Context, req *clusterv1.ProcessRequest) (*clusterv1.ProcessResponse, error) {
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
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &clusterv1.ProcessResponse{Body: resp.Body, Abort: resp.Abort}, nil
}

func (s *nodeServer) SessionOp(_ context.Context, req *clusterv1.SessionOpRequest) (*clusterv1.SessionOpResponse, error) {
	if req.GetProtocolVersion() != ProtocolVersion {
		return nil, status.Errorf(codes.FailedPrecondition, "protocol version %d not supported (want %d)", req.GetProtocolVersion(), ProtocolVersion)
	}
	found, err := s.b.LocalSessionOp(req.GetClientId(), req.GetOp())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &clusterv1.SessionOpResponse{Found: found}, nil
}

// peers keeps one gRPC client connection per peer address.
type peers struct {
	creds credentials.TransportCredentials
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// newPeers dials peers with mutual TLS when tlsCfg is set, else in
// plaintext (a private network).
func newPeers(tlsCfg *tls.Config) *peers {
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	return &peers{creds: creds, conns: map[string]*grpc.ClientConn{}}
}

func (p *peers) client(addr string) (clusterv1.NodeClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.conns[addr]; c != nil {
		return clusterv1.NewNodeClient(c), nil
	}
	c, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(p.creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRPCMessage), grpc.MaxCallSendMsgSize(maxRPCMessage)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: false}),
	)
	if err != nil {
		return nil, fmt.Errorf("grpc client %s: %w", addr, err)
	}
	p.conns[addr] = c
	return clusterv1.NewNodeClient(c), nil
}

// drop closes the connection to addr, if any (the peer left or failed;
// a later call to client dials again, as after a partition heals). The
// close runs in the background: it waits for the connection's goroutines.
func (p *peers) drop(addr string) {
	p.mu.Lock()
	c := p.conns[addr]
	delete(p.conns, addr)
	p.mu.Unlock()
	if c != nil {
		go func() { _ = c.Close() }()
	}
}

// open returns the number of open peer connections.
func (p *peers) open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// prune closes connections to addresses not in live.
func (p *peers) prune(live map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, c := range p.conns {
		if !live[addr] {
			_ = c.Close()
			delete(p.conns, addr)
		}
	}
}

func (p *peers) close() {
	p.prune(nil)
}

// errNoOwner means the session's owner is not a live member.
var errNoOwner = errors.New("cluster: session owner not alive")
