package nodeapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/auth"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/cluster"
	"github.com/bayeux-cluster/bayeux/pkg/serverapi"
)

// local implements the serverapi node interfaces over a broker and its
// engine.
type local struct {
	b       *broker.Broker
	eng     engine.Engine
	id, tag string
	version string

	mu      sync.Mutex
	last    broker.Stats
	lastAt  time.Time
	pubRate float64
	dlvRate float64
}

var (
	_ serverapi.Publisher      = (*local)(nil)
	_ serverapi.History        = (*local)(nil)
	_ serverapi.Presence       = (*local)(nil)
	_ serverapi.SessionControl = (*local)(nil)
	_ serverapi.Stats          = (*local)(nil)
)

func (l *local) Publish(ctx context.Context, ch string, data json.RawMessage) (int64, error) {
	pos, err := l.b.Publish(ctx, ch, data)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", serverapi.ErrUnavailable, err)
	}
	return int64(pos.Offset), nil
}

func (l *local) History(ctx context.Context, ch string, since int64, limit int) ([]serverapi.HistoryMessage, error) {
	head, err := l.eng.Head(ctx, ch)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", serverapi.ErrUnavailable, err)
	}
	after := engine.Retained
	if since >= 0 {
		if uint64(since) > head.Offset {
			return nil, fmt.Errorf("%w: replay id %d is after the newest (%d)", serverapi.ErrInvalid, since, head.Offset)
		}
		after = engine.Position{Epoch: head.Epoch, Offset: uint64(since)}
	}
	pubs, err := l.eng.History(ctx, ch, after, limit)
	if errors.Is(err, engine.ErrPositionGone) {
		return nil, fmt.Errorf("%w: replay id %d is older than the retained history", serverapi.ErrInvalid, since)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", serverapi.ErrUnavailable, err)
	}
	out := make([]serverapi.HistoryMessage, 0, len(pubs))
	for _, p := range pubs {
		var m struct {
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(p.Payload, &m); err != nil {
			return nil, fmt.Errorf("history of %s: publication %d: %w", ch, p.Offset, err)
		}
		out = append(out, serverapi.HistoryMessage{ReplayID: int64(p.Offset), Data: m.Data})
	}
	return out, nil
}

func (l *local) Sessions() []serverapi.LocalSession {
	all := l.b.Sessions()
	out := make([]serverapi.LocalSession, 0, len(all))
	for _, s := range all {
		if s.Ended() {
			continue
		}
		ls := serverapi.LocalSession{ClientID: s.ID(), Transport: s.Transport(), Subscriptions: s.Subscriptions()}
		if id := auth.IdentityOf(s); id != nil {
			ls.User = id.User
		}
		out = append(out, ls)
	}
	return out
}

func (l *local) EndSession(clientID string, reconnect bool) bool {
	return l.b.EndSession(clientID, reconnect)
}

func (l *local) Unsubscribe(ctx context.Context, clientID, ch string) (bool, error) {
	return l.b.Unsubscribe(ctx, clientID, ch)
}

func (l *local) Info() serverapi.NodeInfo {
	st := l.b.Stats()
	l.mu.Lock()
	defer l.mu.Unlock()
	return serverapi.NodeInfo{ID: l.id, Tag: l.tag, Version: l.version, Sessions: st.Sessions, PublishRate: l.pubRate, DeliveryRate: l.dlvRate}
}

// sample updates the rates every interval until ctx ends.
func (l *local) sample(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	l.mu.Lock()
	l.last, l.lastAt = l.b.Stats(), time.Now()
	l.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			st := l.b.Stats()
			l.mu.Lock()
			d := now.Sub(l.lastAt).Seconds()
			if d > 0 {
				l.pubRate = float64(st.Publishes-l.last.Publishes) / d
				l.dlvRate = float64(st.Deliveries-l.last.Deliveries) / d
			}
			l.last, l.lastAt = st, now
			l.mu.Unlock()
		}
	}
}

// peers implements serverapi.Peers over the cluster's Call RPC.
type peers struct {
	cl *cluster.Cluster
}

// Others returns the node ids (as presence names nodes) of the other live
// members.
func (p peers) Others() []string {
	var out []string
	for _, m := range p.cl.Members() {
		if m.Tag != p.cl.Tag() {
			out = append(out, m.ID)
		}
	}
	return out
}

// Call calls the live member with id node.
func (p peers) Call(ctx context.Context, node, method string, body []byte) ([]byte, error) {
	for _, m := range p.cl.Members() {
		if m.ID == node {
			return p.cl.Call(ctx, m.Tag, method, body)
		}
	}
	return nil, fmt.Errorf("node %s is not a live member", node)
}

func (p peers) Handle(method string, h func(ctx context.Context, body []byte) ([]byte, error)) {
	p.cl.HandleCall(method, h)
}
