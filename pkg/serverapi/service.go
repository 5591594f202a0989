package serverapi

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// Methods of the node-to-node calls (Peers.Call).
const (
	callSessions    = "serverapi.sessions"
	callEnd         = "serverapi.end"
	callUnsubscribe = "serverapi.unsubscribe"
	callInfo        = "serverapi.info"
)

// peerTimeout bounds one node-to-node call of a fan-out.
const peerTimeout = 3 * time.Second

// Service runs the API's operations cluster-wide. Its methods are safe
// for concurrent use.
type Service struct {
	pub   Publisher
	hist  History
	pres  Presence
	ctl   SessionControl
	stats Stats
	peers Peers
	self  string
	log   *slog.Logger
}

// ServiceConfig is what a Service runs over. Peers is nil on a single node.
type ServiceConfig struct {
	Publisher      Publisher
	History        History
	Presence       Presence
	SessionControl SessionControl
	Stats          Stats
	Peers          Peers
	NodeID         string
	Logger         *slog.Logger
}

// NewService returns a Service and registers its handlers with Peers.
func NewService(cfg ServiceConfig) *Service {
	s := &Service{pub: cfg.Publisher, hist: cfg.History, pres: cfg.Presence, ctl: cfg.SessionControl,
		stats: cfg.Stats, peers: cfg.Peers, self: cfg.NodeID, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.peers != nil {
		s.peers.Handle(callSessions, s.serveSessions)
		s.peers.Handle(callEnd, s.serveEnd)
		s.peers.Handle(callUnsubscribe, s.serveUnsubscribe)
		s.peers.Handle(callInfo, s.serveInfo)
	}
	return s
}

// Publish publishes data on channel (a concrete broadcast channel).
func (s *Service) Publish(ctx context.Context, ch string, data json.RawMessage) (PublishResult, error) {
	if err := validPublish(ch, data); err != nil {
		return PublishResult{}, err
	}
	id, err := s.pub.Publish(ctx, ch, data)
	if err != nil {
		return PublishResult{}, err
	}
	return PublishResult{Channel: ch, ReplayID: id}, nil
}

// Broadcast publishes data on each channel; a failure on one does not stop
// the others.
func (s *Service) Broadcast(ctx context.Context, chans []string, data json.RawMessage) (BroadcastResult, error) {
	if len(chans) == 0 {
		return BroadcastResult{}, fmt.Errorf("%w: channels is empty", ErrInvalid)
	}
	out := BroadcastResult{Results: make([]PublishResult, 0, len(chans))}
	for _, ch := range chans {
		r, err := s.Publish(ctx, ch, data)
		if err != nil {
			r = PublishResult{Channel: ch, Error: errorOf(err)}
		}
		out.Results = append(out.Results, r)
	}
	return out, nil
}

func validPublish(ch string, data json.RawMessage) error {
	if _, _, err := channel.Parse(ch); err != nil || channel.IsWildcard(ch) {
		return fmt.Errorf("%w: channel %q is not a concrete channel name", ErrInvalid, ch)
	}
	if protocol.IsMeta(ch) || protocol.IsService(ch) {
		return fmt.Errorf("%w: cannot publish to %s", ErrInvalid, ch)
	}
	if len(data) == 0 || !json.Valid(data) {
		return fmt.Errorf("%w: data must be a JSON value", ErrInvalid)
	}
	return nil
}

// History returns up to limit messages of ch after replay id since (< 0:
// from the oldest retained).
func (s *Service) History(ctx context.Context, ch string, since int64, limit int) (HistoryResult, error) {
	if _, _, err := channel.Parse(ch); err != nil || channel.IsWildcard(ch) {
		return HistoryResult{}, fmt.Errorf("%w: channel %q is not a concrete channel name", ErrInvalid, ch)
	}
	if limit <= 0 || limit > 1000 {
		return HistoryResult{}, fmt.Errorf("%w: limit must be between 1 and 1000", ErrInvalid)
	}
	msgs, err := s.hist.History(ctx, ch, since, limit)
	if err != nil {
		return HistoryResult{}, err
	}
	if msgs == nil {
		msgs = []HistoryMessage{}
	}
	return HistoryResult{Channel: ch, Messages: msgs}, nil
}

// nodeSessions is one node's answer to callSessions.
type nodeSessions struct {
	Node     string         `json:"node"`
	Sessions []LocalSession `json:"sessions"`
}

func (s *Service) serveSessions(context.Context, []byte) ([]byte, error) {
	return json.Marshal(nodeSessions{Node: s.self, Sessions: s.pres.Sessions()})
}

// allSessions gathers every live node's sessions, this one's included.
func (s *Service) allSessions(ctx context.Context) ([]nodeSessions, []string) {
	all := []nodeSessions{{Node: s.self, Sessions: s.pres.Sessions()}}
	answers, unreachable := s.fanOut(ctx, callSessions, nil)
	for _, a := range answers {
		var ns nodeSessions
		if err := json.Unmarshal(a, &ns); err != nil {
			s.log.Warn("server API: bad peer answer", "call", callSessions, "err", err)
			continue
		}
		all = append(all, ns)
	}
	return all, unreachable
}

// Channels lists the subscriptions in use cluster-wide matching pattern
// ("" or "/**": all), with their subscriber counts.
func (s *Service) Channels(ctx context.Context, pattern string) (ChannelsResult, error) {
	if pattern == "" {
		pattern = "/**"
	}
	if _, _, err := channel.Parse(pattern); err != nil {
		return ChannelsResult{}, fmt.Errorf("%w: pattern %q: %v", ErrInvalid, pattern, err)
	}
	all, unreachable := s.allSessions(ctx)
	counts := map[string]int{}
	for _, ns := range all {
		for _, ls := range ns.Sessions {
			for _, sub := range ls.Subscriptions {
				if channel.Match(pattern, sub) {
					counts[sub]++
				}
			}
		}
	}
	out := ChannelsResult{Channels: make([]ChannelInfo, 0, len(counts)), Unreachable: unreachable}
	for ch, n := range counts {
		out.Channels = append(out.Channels, ChannelInfo{Channel: ch, Subscribers: n})
	}
	slices.SortFunc(out.Channels, func(a, b ChannelInfo) int { return cmp.Compare(a.Channel, b.Channel) })
	return out, nil
}

// Presence lists the sessions subscribed to ch cluster-wide: to ch itself
// or, for a concrete ch, to a wildcard that matches it.
func (s *Service) Presence(ctx context.Context, ch string) (PresenceResult, error) {
	if _, _, err := channel.Parse(ch); err != nil {
		return PresenceResult{}, fmt.Errorf("%w: channel %q: %v", ErrInvalid, ch, err)
	}
	all, unreachable := s.allSessions(ctx)
	out := PresenceResult{Channel: ch, Sessions: []SessionInfo{}, Unreachable: unreachable}
	for _, ns := range all {
		for _, ls := range ns.Sessions {
			if slices.ContainsFunc(ls.Subscriptions, func(sub string) bool {
				return sub == ch || (channel.IsWildcard(sub) && !channel.IsWildcard(ch) && channel.Match(sub, ch))
			}) {
				out.Sessions = append(out.Sessions, SessionInfo{ClientID: ls.ClientID, Node: ns.Node, Transport: ls.Transport, User: ls.User})
			}
		}
	}
	slices.SortFunc(out.Sessions, func(a, b SessionInfo) int { return cmp.Compare(a.ClientID, b.ClientID) })
	return out, nil
}

// endRequest is the body of callEnd.
type endRequest struct {
	ClientID  string `json:"clientId,omitempty"`
	User      string `json:"user,omitempty"`
	Reconnect bool   `json:"reconnect"`
}

func (s *Service) serveEnd(_ context.Context, body []byte) ([]byte, error) {
	var req endRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return json.Marshal(s.endLocal(req))
}

// endLocal ends the matching sessions of this node.
func (s *Service) endLocal(req endRequest) []string {
	ended := []string{}
	for _, ls := range s.pres.Sessions() {
		if (req.ClientID != "" && ls.ClientID == req.ClientID) || (req.User != "" && ls.User == req.User) {
			if s.ctl.EndSession(ls.ClientID, req.Reconnect) {
				ended = append(ended, ls.ClientID)
			}
		}
	}
	return ended
}

// Disconnect ends the session clientID, or every session of user,
// wherever they are held. Nothing to end (and every node answered) is a
// not-found error.
func (s *Service) Disconnect(ctx context.Context, req DisconnectRequest) (DisconnectResult, error) {
	if (req.ClientID == "") == (req.User == "") {
		return DisconnectResult{}, fmt.Errorf("%w: give exactly one of clientId and user", ErrInvalid)
	}
	er := endRequest{ClientID: req.ClientID, User: req.User, Reconnect: req.Reconnect == nil || *req.Reconnect}
	body, _ := json.Marshal(er)
	var out DisconnectResult
	for try := 0; ; try++ {
		out = DisconnectResult{Disconnected: s.endLocal(er)}
		answers, unreachable := s.fanOut(ctx, callEnd, body)
		for _, a := range answers {
			var ids []string
			if err := json.Unmarshal(a, &ids); err == nil {
				out.Disconnected = append(out.Disconnected, ids...)
			}
		}
		out.Unreachable = unreachable
		if len(out.Disconnected) > 0 || len(unreachable) > 0 || req.ClientID == "" || !s.awaitTransit(ctx, try) {
			break
		}
	}
	slices.Sort(out.Disconnected)
	s.log.Info("server API: disconnect", "clientId", req.ClientID, "user", req.User,
		"reconnect", er.Reconnect, "ended", out.Disconnected, "unreachable", out.Unreachable)
	if len(out.Disconnected) == 0 && len(out.Unreachable) == 0 {
		return out, fmt.Errorf("%w: no session of clientId %q user %q", errNotFound, req.ClientID, req.User)
	}
	return out, nil
}

func (s *Service) serveUnsubscribe(ctx context.Context, body []byte) ([]byte, error) {
	var req UnsubscribeRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	ok, err := s.ctl.Unsubscribe(ctx, req.ClientID, req.Channel)
	if err != nil {
		return nil, err
	}
	return json.Marshal(ok)
}

// Unsubscribe removes clientID's subscription to ch wherever the session
// is held. No such subscription (and every node answered) is a not-found
// error.
func (s *Service) Unsubscribe(ctx context.Context, req UnsubscribeRequest) (UnsubscribeResult, error) {
	if req.ClientID == "" {
		return UnsubscribeResult{}, fmt.Errorf("%w: clientId is required", ErrInvalid)
	}
	if _, _, err := channel.Parse(req.Channel); err != nil {
		return UnsubscribeResult{}, fmt.Errorf("%w: channel %q: %v", ErrInvalid, req.Channel, err)
	}
	done, err := s.ctl.Unsubscribe(ctx, req.ClientID, req.Channel)
	if err != nil {
		return UnsubscribeResult{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var unreachable []string
	body, _ := json.Marshal(req)
	for try := 0; !done; try++ {
		var answers [][]byte
		answers, unreachable = s.fanOut(ctx, callUnsubscribe, body)
		for _, a := range answers {
			var ok bool
			if json.Unmarshal(a, &ok) == nil && ok {
				done = true
			}
		}
		if done || len(unreachable) > 0 || !s.awaitTransit(ctx, try) {
			break
		}
		if done, err = s.ctl.Unsubscribe(ctx, req.ClientID, req.Channel); err != nil {
			return UnsubscribeResult{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
	s.log.Info("server API: unsubscribe", "clientId", req.ClientID, "channel", req.Channel,
		"unsubscribed", done, "unreachable", unreachable)
	if !done && len(unreachable) == 0 {
		return UnsubscribeResult{}, fmt.Errorf("%w: no session %q subscribed to %s", errNotFound, req.ClientID, req.Channel)
	}
	return UnsubscribeResult{Unsubscribed: done, Unreachable: unreachable}, nil
}

func (s *Service) serveInfo(context.Context, []byte) ([]byte, error) {
	return json.Marshal(s.stats.Info())
}

// Nodes describes every live node.
func (s *Service) Nodes(ctx context.Context) (NodesResult, error) {
	out := NodesResult{Self: s.self, Nodes: []NodeInfo{s.stats.Info()}}
	answers, unreachable := s.fanOut(ctx, callInfo, nil)
	for _, a := range answers {
		var ni NodeInfo
		if err := json.Unmarshal(a, &ni); err == nil {
			out.Nodes = append(out.Nodes, ni)
		}
	}
	out.Unreachable = unreachable
	slices.SortFunc(out.Nodes, func(a, b NodeInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// transitRetries and transitPause pace a clientId-targeted call
// (disconnect, unsubscribe) that found its session on no node: it asks
// every node again after 50, 100, 200 and 400 ms. A session moving between
// nodes (the hand-over to its websocket's node, docs/architecture.md
// section 12) is held by neither for one Redis compare-and-set and one
// claim, a few milliseconds; these pauses (0.75 s in all) cover that many
// times over, and are what a clientId that no node holds costs before
// its 404.
const (
	transitRetries = 4
	transitPause   = 50 * time.Millisecond
)

// awaitTransit waits before the retry after try (0-based) of a call that
// found its session nowhere. It reports false when there is no retry:
// a single node (nothing moves), the retries are used up, or ctx ended.
func (s *Service) awaitTransit(ctx context.Context, try int) bool {
	if s.peers == nil || try >= transitRetries {
		return false
	}
	t := time.NewTimer(transitPause << try)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// fanOut calls method on every other live node in parallel and returns the
// answers, and the nodes that failed to answer.
func (s *Service) fanOut(ctx context.Context, method string, body []byte) (answers [][]byte, unreachable []string) {
	if s.peers == nil {
		return nil, nil
	}
	others := s.peers.Others()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, node := range others {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, peerTimeout)
			defer cancel()
			a, err := s.peers.Call(cctx, node, method, body)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				s.log.Warn("server API: peer did not answer", "call", method, "peer", node, "err", err)
				unreachable = append(unreachable, node)
				return
			}
			answers = append(answers, a)
		})
	}
	wg.Wait()
	slices.Sort(unreachable)
	return answers, unreachable
}
