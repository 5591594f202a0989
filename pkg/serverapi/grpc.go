package serverapi

import (
	"context"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	serverv1 "github.com/bayeux-cluster/bayeux/api/proto/server/v1"
)

// grpcServer serves bayeux.server.v1.ServerAPI over the Service, with the
// same keys, rate limit and metrics as the HTTP API.
type grpcServer struct {
	serverv1.UnimplementedServerAPIServer
	h *Handler
}

func newGRPCServer(h *Handler) http.Handler {
	s := grpc.NewServer(
		grpc.MaxRecvMsgSize(int(h.cfg.MaxBodyBytes)),
		grpc.UnaryInterceptor(h.intercept),
	)
	serverv1.RegisterServerAPIServer(s, &grpcServer{h: h})
	return s
}

// intercept authorizes, rate-limits and measures every call.
func (h *Handler) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	start := time.Now()
	call := strings.ToLower(info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:])
	md, _ := metadata.FromIncomingContext(ctx)
	first := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if e, st := h.admit(first("authorization"), first("x-api-key")); e != nil {
		code := codes.Unauthenticated
		if st == http.StatusTooManyRequests {
			code = codes.ResourceExhausted
		}
		h.met.observe(call, "grpc", e.Code, start)
		return nil, status.Error(code, e.Message)
	}
	resp, err := next(ctx, req)
	if err != nil {
		e := errorOf(err)
		h.met.observe(call, "grpc", e.Code, start)
		return nil, status.Error(grpcCode(e.Code), e.Message)
	}
	h.met.observe(call, "grpc", "ok", start)
	return resp, nil
}

func grpcCode(code string) codes.Code {
	switch code {
	case CodeBadRequest:
		return codes.InvalidArgument
	case CodeTooLarge:
		return codes.ResourceExhausted
	case CodeNotFound:
		return codes.NotFound
	default:
		return codes.Unavailable
	}
}

func (g *grpcServer) Publish(ctx context.Context, req *serverv1.PublishRequest) (*serverv1.PublishResponse, error) {
	r, err := g.h.svc.Publish(ctx, req.GetChannel(), req.GetData())
	if err != nil {
		return nil, err
	}
	return &serverv1.PublishResponse{Channel: r.Channel, ReplayId: r.ReplayID}, nil
}

func (g *grpcServer) Broadcast(ctx context.Context, req *serverv1.BroadcastRequest) (*serverv1.BroadcastResponse, error) {
	r, err := g.h.svc.Broadcast(ctx, req.GetChannels(), req.GetData())
	if err != nil {
		return nil, err
	}
	out := &serverv1.BroadcastResponse{}
	for _, x := range r.Results {
		br := &serverv1.BroadcastResult{Channel: x.Channel, ReplayId: x.ReplayID}
		if x.Error != nil {
			br.ErrorCode, br.ErrorMessage = x.Error.Code, x.Error.Message
		}
		out.Results = append(out.Results, br)
	}
	return out, nil
}

func (g *grpcServer) Channels(ctx context.Context, req *serverv1.ChannelsRequest) (*serverv1.ChannelsResponse, error) {
	r, err := g.h.svc.Channels(ctx, req.GetPattern())
	if err != nil {
		return nil, err
	}
	out := &serverv1.ChannelsResponse{Unreachable: r.Unreachable}
	for _, c := range r.Channels {
		out.Channels = append(out.Channels, &serverv1.ChannelInfo{Channel: c.Channel, Subscribers: int32(c.Subscribers)})
	}
	return out, nil
}

func (g *grpcServer) Presence(ctx context.Context, req *serverv1.PresenceRequest) (*serverv1.PresenceResponse, error) {
	r, err := g.h.svc.Presence(ctx, req.GetChannel())
	if err != nil {
		return nil, err
	}
	out := &serverv1.PresenceResponse{Channel: r.Channel, Unreachable: r.Unreachable}
	for _, s := range r.Sessions {
		out.Sessions = append(out.Sessions, &serverv1.SessionInfo{ClientId: s.ClientID, Node: s.Node, Transport: s.Transport, User: s.User})
	}
	return out, nil
}

func (g *grpcServer) History(ctx context.Context, req *serverv1.HistoryRequest) (*serverv1.HistoryResponse, error) {
	since, limit := int64(-1), int(req.GetLimit())
	if req.Since != nil {
		since = req.GetSince()
	}
	if limit == 0 {
		limit = 100
	}
	r, err := g.h.svc.History(ctx, req.GetChannel(), since, limit)
	if err != nil {
		return nil, err
	}
	out := &serverv1.HistoryResponse{Channel: r.Channel}
	for _, m := range r.Messages {
		out.Messages = append(out.Messages, &serverv1.HistoryMessage{ReplayId: m.ReplayID, Data: m.Data})
	}
	return out, nil
}

func (g *grpcServer) Disconnect(ctx context.Context, req *serverv1.DisconnectRequest) (*serverv1.DisconnectResponse, error) {
	r, err := g.h.svc.Disconnect(ctx, DisconnectRequest{ClientID: req.GetClientId(), User: req.GetUser(), Reconnect: req.Reconnect})
	if err != nil {
		return nil, err
	}
	return &serverv1.DisconnectResponse{Disconnected: r.Disconnected, Unreachable: r.Unreachable}, nil
}

func (g *grpcServer) Unsubscribe(ctx context.Context, req *serverv1.UnsubscribeRequest) (*serverv1.UnsubscribeResponse, error) {
	r, err := g.h.svc.Unsubscribe(ctx, UnsubscribeRequest{ClientID: req.GetClientId(), Channel: req.GetChannel()})
	if err != nil {
		return nil, err
	}
	return &serverv1.UnsubscribeResponse{Unsubscribed: r.Unsubscribed, Unreachable: r.Unreachable}, nil
}

func (g *grpcServer) Nodes(ctx context.Context, _ *serverv1.NodesRequest) (*serverv1.NodesResponse, error) {
	r, err := g.h.svc.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	out := &serverv1.NodesResponse{Unreachable: r.Unreachable}
	for _, n := range r.Nodes {
		out.Nodes = append(out.Nodes, &serverv1.NodeInfo{Id: n.ID, Tag: n.Tag, Version: n.Version, Sessions: int32(n.Sessions),
			PublishRate: n.PublishRate, DeliveryRate: n.DeliveryRate})
	}
	return out, nil
}
