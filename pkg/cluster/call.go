package cluster

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/bayeux-cluster/bayeux/api/proto/cluster/v1"
)

// CallHandler serves a Call from a peer: body in, body out. An error
// reaches the caller as a gRPC status (codes.Internal unless it is one).
type CallHandler func(ctx context.Context, body []byte) ([]byte, error)

// calls is the table of CallHandlers by method name.
type calls struct {
	mu sync.RWMutex
	m  map[string]CallHandler
}

func (t *calls) handle(method string, h CallHandler) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]CallHandler{}
	}
	t.m[method] = h
}

func (t *calls) get(method string) CallHandler {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.m[method]
}

// HandleCall registers h for Calls of method from peers (a node-level
// service such as the server API). It replaces any previous handler.
func (c *Cluster) HandleCall(method string, h CallHandler) { c.calls.handle(method, h) }

// Call passes body to the handler of method on the live node with tag
// node and returns its answer.
func (c *Cluster) Call(ctx context.Context, node, method string, body []byte) ([]byte, error) {
	owner, ok := c.mem.Alive(node)
	if !ok {
		return nil, errNoOwner
	}
	client, release, err := c.peers.client(owner.GRPC)
	if err != nil {
		return nil, err
	}
	defer release()
	resp, err := client.Call(ctx, &clusterv1.CallRequest{ProtocolVersion: ProtocolVersion, Method: method, Body: body})
	if err != nil {
		return nil, fmt.Errorf("call %s on %s: %w", method, owner.ID, err)
	}
	return resp.GetBody(), nil
}

func (s *nodeServer) Call(ctx context.Context, req *clusterv1.CallRequest) (*clusterv1.CallResponse, error) {
	if req.GetProtocolVersion() != ProtocolVersion {
		return nil, status.Errorf(codes.FailedPrecondition, "protocol version %d not supported (want %d)", req.GetProtocolVersion(), ProtocolVersion)
	}
	h := s.calls.get(req.GetMethod())
	if h == nil {
		return nil, status.Errorf(codes.Unimplemented, "no handler for %q", req.GetMethod())
	}
	body, err := h(ctx, req.GetBody())
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &clusterv1.CallResponse{Body: body}, nil
}
