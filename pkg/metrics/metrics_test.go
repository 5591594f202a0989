package metrics_test

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/cluster"
	"github.com/bayeux-cluster/bayeux/pkg/metrics"
)

var (
	_ broker.Observer  = (*metrics.Metrics)(nil)
	_ cluster.Observer = (*metrics.Metrics)(nil)
)

// value returns the value of the series name{label=value} (label "" for an
// unlabelled series): a counter's or gauge's value, or a histogram's sample
// count. ok is false if the series is not exported.
func value(t *testing.T, reg *prometheus.Registry, name, label, lv string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && !hasLabel(m, label, lv) {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name && lp.GetValue() == value {
			return true
		}
	}
	return false
}

func TestSeries(t *testing.T) {
	errRedis := errors.New("redis down")
	tests := []struct {
		name   string
		do     func(m *metrics.Metrics)
		series string
		label  string
		lv     string
		want   float64
	}{
		{"session opened", func(m *metrics.Metrics) { m.SessionOpened("long-polling"); m.SessionOpened("long-polling") }, "bayeux_sessions", "transport", "long-polling", 2},
		{"session closed", func(m *metrics.Metrics) { m.SessionOpened("websocket"); m.SessionClosed("websocket") }, "bayeux_sessions", "transport", "websocket", 0},
		{"session unknown transport", func(m *metrics.Metrics) { m.SessionOpened("carrier-pigeon") }, "bayeux_sessions", "transport", "other", 1},
		{"callback-polling session", func(m *metrics.Metrics) { m.SessionOpened("callback-polling") }, "bayeux_sessions", "transport", "callback-polling", 1},
		{"handshake ok", func(m *metrics.Metrics) { m.Handshake(true) }, "bayeux_handshakes_total", "result", "ok", 1},
		{"handshake error", func(m *metrics.Metrics) { m.Handshake(false); m.Handshake(false) }, "bayeux_handshakes_total", "result", "error", 2},
		{"connect", func(m *metrics.Metrics) { m.Connect(); m.Connect(); m.Connect() }, "bayeux_connects_total", "", "", 3},
		{"subscribe", func(m *metrics.Metrics) { m.Subscribe() }, "bayeux_subscribes_total", "", "", 1},
		{"publish ok", func(m *metrics.Metrics) { m.Publish(true) }, "bayeux_publishes_total", "result", "ok", 1},
		{"publish error", func(m *metrics.Metrics) { m.Publish(false) }, "bayeux_publishes_total", "result", "error", 1},
		{"deliveries", func(m *metrics.Metrics) { m.Deliveries(5); m.Deliveries(2) }, "bayeux_deliveries_total", "", "", 7},
		{"known error code", func(m *metrics.Metrics) { m.Error(402) }, "bayeux_errors_total", "code", "402", 1},
		{"503", func(m *metrics.Metrics) { m.Error(503) }, "bayeux_errors_total", "code", "503", 1},
		{"unknown error code", func(m *metrics.Metrics) { m.Error(418); m.Error(0); m.Error(1000) }, "bayeux_errors_total", "code", "other", 3},
		{"queue overflow", func(m *metrics.Metrics) { m.QueueOverflow() }, "bayeux_queue_overflows_total", "", "", 1},
		{"held connects", func(m *metrics.Metrics) { m.HeldConnect(1); m.HeldConnect(1); m.HeldConnect(-1) }, "bayeux_held_connects", "", "", 1},
		{"gap", func(m *metrics.Metrics) { m.Gap() }, "bayeux_gaps_total", "", "", 1},
		{"sessions per ip refused", func(m *metrics.Metrics) { m.LimitRefused(broker.LimitSessionsPerIP) }, "bayeux_limit_refusals_total", "limit", "sessions_per_ip", 1},
		{"held per ip refused", func(m *metrics.Metrics) { m.LimitRefused(broker.LimitHeldPerIP); m.LimitRefused(broker.LimitHeldPerIP) }, "bayeux_limit_refusals_total", "limit", "held_per_ip", 2},
		{"redis publish timed", func(m *metrics.Metrics) { m.RedisCommand(cluster.OpPublish, time.Millisecond, nil) }, "bayeux_redis_command_duration_seconds", "op", "publish", 1},
		{"redis history timed", func(m *metrics.Metrics) { m.RedisCommand(cluster.OpHistory, time.Millisecond, errRedis) }, "bayeux_redis_command_duration_seconds", "op", "history", 1},
		{"redis publish error", func(m *metrics.Metrics) { m.RedisCommand(cluster.OpPublish, time.Second, errRedis) }, "bayeux_redis_errors_total", "op", "publish", 1},
		{"redis success is no error", func(m *metrics.Metrics) { m.RedisCommand(cluster.OpHistory, time.Second, nil) }, "bayeux_redis_errors_total", "op", "history", 0},
		{"forward ok", func(m *metrics.Metrics) { m.Forward(cluster.ForwardOK) }, "bayeux_grpc_forwards_total", "result", "ok", 1},
		{"forward no owner", func(m *metrics.Metrics) { m.Forward(cluster.ForwardNoOwner) }, "bayeux_grpc_forwards_total", "result", "no_owner", 1},
		{"forward error", func(m *metrics.Metrics) { m.Forward(cluster.ForwardError) }, "bayeux_grpc_forwards_total", "result", "error", 1},
		{"gossip members", func(m *metrics.Metrics) { m.Members(3); m.Members(2) }, "bayeux_gossip_members", "", "", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := metrics.New(reg)
			m.RegisterCluster()
			tc.do(m)
			got, ok := value(t, reg, tc.series, tc.label, tc.lv)
			if !ok {
				t.Fatalf("series %s{%s=%q} not exported", tc.series, tc.label, tc.lv)
			}
			if got != tc.want {
				t.Fatalf("%s{%s=%q} = %v, want %v", tc.series, tc.label, tc.lv, got, tc.want)
			}
		})
	}
}

// TestClusterSeriesOptIn: a single node exports no cluster series.
func TestClusterSeriesOptIn(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.Members(1)
	if _, ok := value(t, reg, "bayeux_gossip_members", "", ""); ok {
		t.Fatal("cluster series exported without RegisterCluster")
	}
	if _, ok := value(t, reg, "bayeux_connects_total", "", ""); !ok {
		t.Fatal("broker series missing")
	}
}

// TestOwnRegistry: nodes in one process never share series; a second
// registration on one registry is a programmer error.
func TestOwnRegistry(t *testing.T) {
	r1, r2 := prometheus.NewRegistry(), prometheus.NewRegistry()
	m1, m2 := metrics.New(r1), metrics.New(r2)
	m1.Connect()
	if v, _ := value(t, r2, "bayeux_connects_total", "", ""); v != 0 {
		t.Fatalf("second registry sees %v connects", v)
	}
	m2.Connect()
	m2.Connect()
	if v, _ := value(t, r1, "bayeux_connects_total", "", ""); v != 1 {
		t.Fatalf("first registry: %v connects, want 1", v)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("registering twice on one registry did not panic")
		}
	}()
	metrics.New(r1)
}

// TestNoAllocs: the per-message events allocate nothing.
func TestNoAllocs(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	m.RegisterCluster()
	allocs := testing.AllocsPerRun(1000, func() {
		m.Connect()
		m.Publish(true)
		m.Deliveries(3)
		m.Error(402)
		m.Error(499)
		m.SessionOpened("websocket")
		m.SessionClosed("websocket")
		m.HeldConnect(1)
		m.HeldConnect(-1)
		m.RedisCommand(cluster.OpPublish, time.Millisecond, nil)
		m.Forward(cluster.ForwardOK)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per event batch, want 0", allocs)
	}
}

func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.BuildInfo("v0.1.0", "abc123", "go1.26.0")
	for _, l := range []struct{ name, value string }{{"version", "v0.1.0"}, {"revision", "abc123"}, {"go_version", "go1.26.0"}} {
		if v, ok := value(t, reg, "bayeux_build_info", l.name, l.value); !ok || v != 1 {
			t.Errorf("bayeux_build_info{%s=%q} = %v, %v; want 1", l.name, l.value, v, ok)
		}
	}
}
