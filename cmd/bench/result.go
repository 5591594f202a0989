package main

import (
	"fmt"
	"time"
)

// Params are the run's parameters as reported.
type Params struct {
	Config
	Duration     string `json:"duration"`
	Warmup       string `json:"warmup"`
	Drain        string `json:"drain"`
	SetupTimeout string `json:"setup_timeout"`
}

// Result is one run, printed as one JSON line.
type Result struct {
	Scenario  string `json:"scenario"`
	Transport string `json:"transport"`
	Params    Params `json:"params"`
	StartedAt string `json:"started_at"`

	Sessions      int   `json:"sessions"`
	Published     int64 `json:"published"`      // acknowledged publications
	PublishErrors int64 `json:"publish_errors"` // publications the server refused or that timed out
	Delivered     int64 `json:"delivered"`      // handler calls, duplicates included
	Expected      int64 `json:"expected"`       // sum over subscribers of acknowledged publications on their channel
	Lost          int64 `json:"lost"`
	Duplicated    int64 `json:"duplicated"`
	OutOfOrder    int64 `json:"out_of_order"`
	Malformed     int64 `json:"malformed"` // deliveries whose data was not a bench payload
	// ConnectFailures: /meta/connects refused or failed, over all
	// sessions; SessionsFailed: sessions that ended early (the tool does
	// not re-handshake: a session the server dropped stays dropped).
	ConnectFailures int64 `json:"connect_failures"`
	SessionsFailed  int64 `json:"sessions_failed"`

	LatencyMs             Latency `json:"latency_ms"`
	LatencySamples        int     `json:"latency_samples"`
	LatencySamplesDropped int64   `json:"latency_samples_dropped"`
	LatencyStorage        string  `json:"latency_storage"`

	WindowSeconds   float64 `json:"window_seconds"` // end of warm-up to end of drain
	DrainSeconds    float64 `json:"drain_seconds"`  // publishers stopped to last expected delivery (or --drain)
	PublishesPerSec float64 `json:"publishes_per_sec"`
	// ScheduleLagMs (with --rate): how late the last publication of the
	// most-behind publisher was sent; large means the rate was not reached.
	ScheduleLagMs    float64 `json:"schedule_lag_ms"`
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`

	ToolCPUSeconds            float64 `json:"tool_cpu_seconds"`
	ServerCPUSeconds          float64 `json:"server_cpu_seconds"`
	AuxCPUSeconds             float64 `json:"aux_cpu_seconds,omitempty"` // --aux-pid (Redis, balancer), not in server_cpu_seconds
	ServerRSSBytes            int64   `json:"server_rss_bytes"`          // at the end of the window
	ServerRSSBaselineBytes    int64   `json:"server_rss_baseline_bytes"` // before the first dial
	DeliveriesPerServerCPUSec float64 `json:"deliveries_per_server_cpu_sec"`
	RSSPerSessionBytes        float64 `json:"rss_per_session_bytes,omitempty"` // idle-sessions

	// Bytes the tool's sockets read from and wrote to the server during
	// the window (TCP payload: HTTP and websocket framing included, after
	// websocket compression), and bytes read per measured delivery.
	WireBytesIn            int64   `json:"wire_bytes_in"`
	WireBytesOut           int64   `json:"wire_bytes_out"`
	WireBytesInPerDelivery float64 `json:"wire_bytes_in_per_delivery"`
}

func paramsOf(c Config) Params {
	return Params{Config: c, Duration: c.Duration.String(), Warmup: c.Warmup.String(),
		Drain: c.Drain.String(), SetupTimeout: c.SetupTimeout.String()}
}

// Summary is the one-line human summary.
func (r Result) Summary() string {
	p := r.Params
	if r.Scenario == IdleSessions {
		return fmt.Sprintf("%s %s: %d sessions held %s; server rss %.1f MiB -> %.1f MiB = %.0f B/session; server cpu %.2fs; tool cpu %.2fs",
			r.Scenario, r.Transport, r.Sessions, p.Duration, mib(r.ServerRSSBaselineBytes), mib(r.ServerRSSBytes),
			r.RSSPerSessionBytes, r.ServerCPUSeconds, r.ToolCPUSeconds)
	}
	rate := "max"
	if p.Rate > 0 {
		rate = fmt.Sprintf("%g/s", p.Rate)
	}
	return fmt.Sprintf("%s %s: %d subs/%d ch/%d pubs rate %s %s: published %d (err %d) delivered %d/%d lost %d dup %d ooo %d connect-fail %d sessions-failed %d; %.0f deliveries/s; latency ms p50 %.2f p99 %.2f p999 %.2f max %.2f; server cpu %.2fs rss %.1f MiB (%.0f deliveries/cpu-s); wire in %.0f B/delivery; tool cpu %.2fs",
		r.Scenario, r.Transport, p.Subscribers, p.Channels, p.Publishers, rate, p.Duration,
		r.Published, r.PublishErrors, r.Delivered, r.Expected, r.Lost, r.Duplicated, r.OutOfOrder, r.ConnectFailures, r.SessionsFailed,
		r.DeliveriesPerSec, r.LatencyMs.P50, r.LatencyMs.P99, r.LatencyMs.P999, r.LatencyMs.Max,
		r.ServerCPUSeconds, mib(r.ServerRSSBytes), r.DeliveriesPerServerCPUSec, r.WireBytesInPerDelivery, r.ToolCPUSeconds)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func secs(d time.Duration) float64 { return d.Seconds() }
