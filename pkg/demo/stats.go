package demo

import (
	"context"
	"math"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// NodeStats is what each node publishes on /cluster/nodes every
// StatsInterval. The cluster page aggregates by Node and drops a node it
// has not heard from for a few intervals.
type NodeStats struct {
	Node             string  `json:"node"`
	Tag              string  `json:"tag,omitempty"` // the prefix of the clientIds of this node's sessions
	Sessions         int     `json:"sessions"`      // sessions held by this node
	Patterns         int     `json:"patterns"`      // distinct subscription patterns in use on this node
	PublishesPerSec  float64 `json:"publishesPerSec"`
	DeliveriesPerSec float64 `json:"deliveriesPerSec"`
	Handshakes       int64   `json:"handshakes"` // since the node started
	Publishes        int64   `json:"publishes"`
	Deliveries       int64   `json:"deliveries"`
	UptimeSec        int64   `json:"uptimeSec"`
	IntervalMs       int64   `json:"intervalMs"` // how often this node reports
	Time             int64   `json:"time"`       // when (ms since the epoch, the node's clock)
}

type statsPublisher struct {
	a                     *App
	last                  time.Time
	publishes, deliveries int64
}

func newStatsPublisher(a *App) *statsPublisher {
	s := a.b.Stats()
	return &statsPublisher{a: a, last: time.Now(), publishes: s.Publishes, deliveries: s.Deliveries}
}

func rate(d int64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return math.Round(float64(d)/secs*10) / 10
}

func (p *statsPublisher) publish(ctx context.Context, now time.Time) {
	s := p.a.b.Stats()
	secs := now.Sub(p.last).Seconds()
	ns := NodeStats{
		Node:             p.a.cfg.NodeID,
		Tag:              p.a.cfg.Tag,
		Sessions:         s.Sessions,
		Patterns:         s.Patterns,
		PublishesPerSec:  rate(s.Publishes-p.publishes, secs),
		DeliveriesPerSec: rate(s.Deliveries-p.deliveries, secs),
		Handshakes:       s.Handshakes,
		Publishes:        s.Publishes,
		Deliveries:       s.Deliveries,
		UptimeSec:        int64(now.Sub(p.a.started).Seconds()),
		IntervalMs:       p.a.cfg.StatsInterval.Milliseconds(),
		Time:             now.UnixMilli(),
	}
	p.last, p.publishes, p.deliveries = now, s.Publishes, s.Deliveries
	data := mustJSON(ns)
	var err error
	if eng := p.a.cfg.Engine; eng != nil {
		_, err = eng.Publish(ctx, NodesChannel, protocol.AppendPublication(nil, NodesChannel, data, nil, nil))
	} else {
		_, err = p.a.b.Publish(ctx, NodesChannel, data)
	}
	if err != nil && ctx.Err() == nil {
		p.a.log.Debug("demo: stats publish failed", "err", err)
	}
}
