package cluster

import (
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// Readiness answers a node's GET /readyz. What it means (see
// docs/architecture.md, "Readiness"):
//
//   - 503 while the node starts, while it shuts down (drain: balancers and
//     Kubernetes stop sending it new clients), and while a node given
//     seeds (--join) has joined nobody (it would otherwise serve as a
//     cluster of one, apart from its peers).
//   - 200 otherwise, including during a backplane (Redis) outage: every
//     node shares the backplane, so turning unready would empty a
//     Kubernetes Service at once, although the nodes still serve held
//     connects, deliveries already received and sessions' state. The
//     outage is reported instead: in the body ("ready (degraded): ..."),
//     by bayeux_backplane_up 0, and by a WARN when it starts (then at most
//     every 30s). The body is healthy again within a second of Redis
//     answering (a PING every 500ms), whatever the node's subscriptions.
type Readiness struct {
	shuttingDown func() bool
	backplane    interface{ Health() Health } // nil with the in-memory engine
	started      atomic.Bool
	cluster      atomic.Pointer[Cluster]
}

// NewReadiness returns the readiness of a node whose broker reports
// shuttingDown and whose engine is eng (a *Redis in cluster mode).
func NewReadiness(shuttingDown func() bool, eng any) *Readiness {
	r := &Readiness{shuttingDown: shuttingDown}
	if bp, ok := eng.(interface{ Health() Health }); ok {
		r.backplane = bp
	}
	return r
}

// BackplaneUp is 1 while Redis answers (or without Redis), else 0: the
// value of bayeux_backplane_up.
func (r *Readiness) BackplaneUp() float64 {
	return boolGauge(r.backplane == nil || r.backplane.Health().Up)
}

// Joined is 1 once the node joined a cluster (or needs none), else 0: the
// value of bayeux_cluster_joined.
func (r *Readiness) Joined() float64 {
	ok, _ := r.joined()
	return boolGauge(ok)
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Started marks the node as serving.
func (r *Readiness) Started() { r.started.Store(true) }

// SetCluster gives the cluster whose membership readiness reports.
func (r *Readiness) SetCluster(c *Cluster) { r.cluster.Store(c) }

func (r *Readiness) joined() (bool, string) {
	c := r.cluster.Load()
	if c == nil {
		return true, "" // a single node, or not started (see Started)
	}
	return c.mem.Joined()
}

// Check returns whether the node is ready and a one-line detail.
func (r *Readiness) Check() (ready bool, detail string) {
	switch {
	case !r.started.Load():
		return false, "not ready: starting"
	case r.shuttingDown():
		return false, "not ready: shutting down"
	}
	if ok, why := r.joined(); !ok {
		return false, "not ready: " + why
	}
	if r.backplane == nil {
		return true, "ready"
	}
	h := r.backplane.Health()
	switch {
	case !h.Up:
		return true, fmt.Sprintf("ready (degraded): backplane unavailable for %v: %v", time.Since(h.Since).Round(100*time.Millisecond), h.Err)
	case !h.PubSub:
		return true, "ready (degraded): backplane pub/sub reconnecting"
	}
	return true, "ready"
}

// ServeHTTP answers 200 or 503 with the detail line.
func (r *Readiness) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	ok, detail := r.Check()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = io.WriteString(w, detail+"\n")
}
