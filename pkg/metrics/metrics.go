package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

const namespace = "bayeux"

// Transport label values; any other transport is counted as "other".
var transports = [...]string{protocol.LongPolling, protocol.CallbackPolling, protocol.WebSocket, "other"}

// errorCodes are the Bayeux error codes the broker emits, each bound to its
// own errors_total child; any other code is counted as "other".
var errorCodes = [...]int{
	protocol.CodeBadRequest, protocol.CodeNoClientID, protocol.CodeUnknownClient,
	protocol.CodeDenied, protocol.CodeInvalidChannel, protocol.CodeConnectionType,
	protocol.CodeVersion, protocol.CodeQueueOverflow, protocol.CodeMessagesLost,
	protocol.CodeTooLarge, protocol.CodeTooMany, protocol.CodeServerUnavailable,
}

const (
	minCode = 400
	maxCode = 599
)

// redisBuckets span a local round trip (~100µs) to a struggling backplane
// (seconds).
var redisBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

// Metrics holds one node's collectors. Create it with New.
type Metrics struct {
	reg prometheus.Registerer

	sessions       [len(transports)]prometheus.Gauge
	handshakesOK   prometheus.Counter
	handshakesErr  prometheus.Counter
	connects       prometheus.Counter
	subscribes     prometheus.Counter
	publishesOK    prometheus.Counter
	publishesErr   prometheus.Counter
	deliveries     prometheus.Counter
	errors         [maxCode - minCode + 1]prometheus.Counter // by code-400; nil: "other"
	errorsOther    prometheus.Counter
	queueOverflows prometheus.Counter
	heldConnects   prometheus.Gauge
	gaps           prometheus.Counter
	adopted        prometheus.Counter
	latency        prometheus.Observer
	limitSessions  prometheus.Counter // limit_refusals_total{limit="sessions_per_ip"}
	limitHeld      prometheus.Counter // limit_refusals_total{limit="held_per_ip"}

	cluster []prometheus.Collector // registered by RegisterCluster

	redisPublish, redisHistory       prometheus.Observer
	redisPublishErr, redisHistoryErr prometheus.Counter
	forwardOK, forwardNoOwner        prometheus.Counter
	forwardErr                       prometheus.Counter
	members                          prometheus.Gauge
}

// New creates the collectors and registers the broker series on reg. It
// panics if they are already registered there.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{reg: reg}

	sessions := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "sessions",
		Help: "Live local sessions, by the transport they handshook on.",
	}, []string{"transport"})
	for i, t := range transports {
		m.sessions[i] = sessions.WithLabelValues(t)
	}
	handshakes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "handshakes_total",
		Help: "Handshakes processed, by result.",
	}, []string{"result"})
	m.handshakesOK, m.handshakesErr = handshakes.WithLabelValues("ok"), handshakes.WithLabelValues("error")
	m.connects = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "connects_total",
		Help: "/meta/connect messages processed.",
	})
	m.subscribes = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "subscribes_total",
		Help: "/meta/subscribe messages processed.",
	})
	publishes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "publishes_total",
		Help: "Publishes to broadcast channels, by result (error: denied or not accepted by the engine).",
	}, []string{"result"})
	m.publishesOK, m.publishesErr = publishes.WithLabelValues("ok"), publishes.WithLabelValues("error")
	m.deliveries = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "deliveries_total",
		Help: "Publications enqueued to local sessions.",
	})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "errors_total",
		Help: "Failed Bayeux replies written, by error code.",
	}, []string{"code"})
	for _, c := range errorCodes {
		m.errors[c-minCode] = errs.WithLabelValues(strconv.Itoa(c))
	}
	m.errorsOther = errs.WithLabelValues("other")
	m.queueOverflows = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "queue_overflows_total",
		Help: "Sessions terminated because their queue was full.",
	})
	m.heldConnects = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "held_connects",
		Help: "/meta/connect requests currently held.",
	})
	m.adopted = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "sessions_adopted_total",
		Help: "Sessions this node took over from a dead or draining node.",
	})
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "delivery_latency_seconds",
		Help:    "Time from publish (ordered by the engine) to handing the message to a subscriber's transport.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	})
	m.latency = latency
	m.gaps = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "gaps_total",
		Help: "Unrecoverable gaps reported by the engine.",
	})
	limits := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "limit_refusals_total",
		Help: "Requests refused by a per-address limit (--max-sessions-per-ip, --max-held-per-ip), by limit.",
	}, []string{"limit"})
	m.limitSessions, m.limitHeld = limits.WithLabelValues(broker.LimitSessionsPerIP), limits.WithLabelValues(broker.LimitHeldPerIP)
	reg.MustRegister(sessions, handshakes, m.connects, m.subscribes, publishes, m.deliveries,
		errs, m.queueOverflows, m.heldConnects, m.gaps, m.adopted, latency, limits)

	redisDur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "redis_command_duration_seconds",
		Help: "Duration of Redis publish and history commands, by operation.", Buckets: redisBuckets,
	}, []string{"op"})
	m.redisPublish, m.redisHistory = redisDur.WithLabelValues("publish"), redisDur.WithLabelValues("history")
	redisErrs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "redis_errors_total",
		Help: "Failed Redis publish and history commands, by operation.",
	}, []string{"op"})
	m.redisPublishErr, m.redisHistoryErr = redisErrs.WithLabelValues("publish"), redisErrs.WithLabelValues("history")
	forwards := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "grpc_forwards_total",
		Help: "Requests forwarded over gRPC to the session's owner, by result.",
	}, []string{"result"})
	m.forwardOK, m.forwardNoOwner, m.forwardErr = forwards.WithLabelValues("ok"), forwards.WithLabelValues("no_owner"), forwards.WithLabelValues("error")
	m.members = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "gossip_members",
		Help: "Live cluster nodes, self included.",
	})
	m.cluster = []prometheus.Collector{redisDur, redisErrs, forwards, m.members}
	return m
}

// RegisterCluster registers the cluster series (Redis, gRPC forwarding,
// gossip) on the Registerer given to New. Call it once, in cluster mode.
func (m *Metrics) RegisterCluster() {
	m.reg.MustRegister(m.cluster...)
}

func transportIndex(t string) int {
	switch t {
	case protocol.LongPolling:
		return 0
	case protocol.CallbackPolling:
		return 1
	case protocol.WebSocket:
		return 2
	}
	return 3
}

// SessionOpened implements broker.Observer.
func (m *Metrics) SessionOpened(transport string) { m.sessions[transportIndex(transport)].Inc() }

// SessionClosed implements broker.Observer.
func (m *Metrics) SessionClosed(transport string) { m.sessions[transportIndex(transport)].Dec() }

// Handshake implements broker.Observer.
func (m *Metrics) Handshake(ok bool) { result(ok, m.handshakesOK, m.handshakesErr).Inc() }

// Connect implements broker.Observer.
func (m *Metrics) Connect() { m.connects.Inc() }

// Subscribe implements broker.Observer.
func (m *Metrics) Subscribe() { m.subscribes.Inc() }

// Publish implements broker.Observer.
func (m *Metrics) Publish(ok bool) { result(ok, m.publishesOK, m.publishesErr).Inc() }

// Deliveries implements broker.Observer.
func (m *Metrics) Deliveries(n int) { m.deliveries.Add(float64(n)) }

// Error implements broker.Observer.
func (m *Metrics) Error(code int) {
	if code >= minCode && code <= maxCode {
		if c := m.errors[code-minCode]; c != nil {
			c.Inc()
			return
		}
	}
	m.errorsOther.Inc()
}

// QueueOverflow implements broker.Observer.
func (m *Metrics) QueueOverflow() { m.queueOverflows.Inc() }

// HeldConnect implements broker.Observer.
func (m *Metrics) HeldConnect(delta int) { m.heldConnects.Add(float64(delta)) }

// Gap implements broker.Observer.
func (m *Metrics) Gap() { m.gaps.Inc() }

// DeliveryLatency implements broker.Observer.
func (m *Metrics) DeliveryLatency(seconds float64) { m.latency.Observe(seconds) }

// BuildInfo registers bayeux_build_info{version,revision,go_version}, a
// gauge of 1 naming the running build (the Prometheus convention for
// joining a version onto other series).
func (m *Metrics) BuildInfo(version, revision, goVersion string) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help:        "Always 1; its labels name the running build: version, VCS revision and Go version.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "go_version": goVersion},
	})
	g.Set(1)
	m.reg.MustRegister(g)
}

// QueuedMessages registers bayeux_queued_messages, computed at scrape time
// by f: messages waiting in the sessions' queues, unacknowledged batches
// included.
func (m *Metrics) QueuedMessages(f func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "queued_messages",
		Help: "Messages waiting in the sessions' queues, unacknowledged batches included.",
	}, f))
}

// GossipHealth registers bayeux_gossip_health_score, computed at scrape
// time by f: memberlist's awareness score of this node (0: healthy).
func (m *Metrics) GossipHealth(f func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "gossip_health_score",
		Help: "Memberlist's awareness score of this node (0: healthy; higher: it misses probes).",
	}, f))
}

// Backplane registers bayeux_backplane_up (Redis answers the node's
// PING: 1, else 0) and bayeux_cluster_joined (the node joined a cluster,
// or was given no seeds: 1, else 0), computed at scrape time.
func (m *Metrics) Backplane(up, joined func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "backplane_up",
		Help: "1 while Redis answers the node's PING (every 500ms), 0 during an outage.",
	}, up))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "cluster_joined",
		Help: "1 once the node joined a cluster (or was given no seeds), 0 while it has joined nobody.",
	}, joined))
}

// LimitRefused implements broker.Observer.
func (m *Metrics) LimitRefused(limit string) {
	if limit == broker.LimitHeldPerIP {
		m.limitHeld.Inc()
		return
	}
	m.limitSessions.Inc()
}

// SessionAdopted implements broker.Observer.
func (m *Metrics) SessionAdopted() { m.adopted.Inc() }

// RedisCommand implements cluster.Observer.
func (m *Metrics) RedisCommand(op string, d time.Duration, err error) {
	dur, errs := m.redisPublish, m.redisPublishErr
	if op == "history" {
		dur, errs = m.redisHistory, m.redisHistoryErr
	}
	dur.Observe(d.Seconds())
	if err != nil {
		errs.Inc()
	}
}

// Forward implements cluster.Observer.
func (m *Metrics) Forward(res string) {
	switch res {
	case "ok":
		m.forwardOK.Inc()
	case "no_owner":
		m.forwardNoOwner.Inc()
	default:
		m.forwardErr.Inc()
	}
}

// Members implements cluster.Observer.
func (m *Metrics) Members(n int) { m.members.Set(float64(n)) }

func result(ok bool, okC, errC prometheus.Counter) prometheus.Counter {
	if ok {
		return okC
	}
	return errC
}
