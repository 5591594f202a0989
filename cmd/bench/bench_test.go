package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

func TestPercentile(t *testing.T) {
	seq := func(n int) []int64 {
		s := make([]int64, n)
		for i := range s {
			s[i] = int64(i + 1)
		}
		return s
	}
	cases := []struct {
		name   string
		sorted []int64
		q      float64
		want   int64
	}{
		{"empty", nil, 0.5, 0},
		{"one p50", []int64{7}, 0.5, 7},
		{"one p999", []int64{7}, 0.999, 7},
		{"two p50", []int64{1, 2}, 0.5, 1},
		{"two p90", []int64{1, 2}, 0.9, 2},
		{"ten p50", seq(10), 0.5, 5},
		{"ten p90", seq(10), 0.9, 9},
		{"ten p99", seq(10), 0.99, 10},
		{"hundred p99", seq(100), 0.99, 99},
		{"thousand p999", seq(1000), 0.999, 999},
		{"thousand p100", seq(1000), 1, 1000},
		{"tiny q", seq(1000), 0.0001, 1},
	}
	for _, c := range cases {
		if got := percentile(c.sorted, c.q); got != c.want {
			t.Errorf("%s: percentile(q=%g) = %d, want %d", c.name, c.q, got, c.want)
		}
	}
	l := latencyOf([]int64{3e6, 1e6, 2e6})
	if l.P50 != 2 || l.Max != 3 || l.P90 != 3 {
		t.Errorf("latencyOf = %+v", l)
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	b := appendPayload(nil, 3, 123456, 1764000000123456789, "")
	pl, ok := parsePayload(b)
	if !ok || pl != (payload{3, 123456, 1764000000123456789}) {
		t.Fatalf("parse %s = %+v %v", b, pl, ok)
	}
	pl, ok = parsePayload([]byte(` { "t": 5, "s": 2, "p": 1 } `)) // re-encoded by a server
	if !ok || pl != (payload{1, 2, 5}) {
		t.Fatalf("fallback = %+v %v", pl, ok)
	}
	if _, ok := parsePayload([]byte(`"x"`)); ok {
		t.Fatal("non-payload accepted")
	}
	pad := newPadder(300, 1)
	first := strings.Clone(pad.next())
	if len(first) != 300 || strings.ContainsAny(first, `"\`) || pad.next() == first {
		t.Fatalf("padding %q", first)
	}
	b = appendPayload(nil, 3, 7, 9, first)
	if pl, ok := parsePayload(b); !ok || pl != (payload{3, 7, 9}) || !json.Valid(b) {
		t.Fatalf("padded payload %s = %+v %v", b, pl, ok)
	}
}

func TestParseProc(t *testing.T) {
	stat := []byte("1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 1000 200 18446744073709551615\n")
	cpu, err := parseStatCPU(stat)
	if err != nil || cpu != 3.0 {
		t.Fatalf("cpu = %v, %v; want 3.0", cpu, err)
	}
	rss, err := parseStatusRSS([]byte("Name:\tnode\nVmRSS:\t   2048 kB\nThreads:\t9\n"))
	if err != nil || rss != 2048*1024 {
		t.Fatalf("rss = %d, %v", rss, err)
	}
}

func TestFanoutAgainstNode(t *testing.T) {
	node := testproc.StartNode(t, nil)
	for _, tr := range []string{"websocket", "long-polling"} {
		t.Run(tr, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cfg := Config{
				URL:          node.URL,
				Transport:    tr,
				Scenario:     Fanout,
				Subscribers:  20,
				Rate:         500,
				Duration:     400 * time.Millisecond, // 200 messages at 500/s
				Warmup:       0,
				Drain:        5 * time.Second,
				SetupTimeout: 30 * time.Second,
				DialParallel: 8,
				MaxSamples:   100_000,
				ServerPIDs:   []int{node.PID()},
			}
			res, err := Run(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res.Summary())
			if res.Published != 200 || res.PublishErrors != 0 {
				t.Errorf("published %d (errors %d), want 200 and no errors", res.Published, res.PublishErrors)
			}
			if res.Expected != 20*res.Published {
				t.Errorf("expected %d, want 20×%d", res.Expected, res.Published)
			}
			if res.Lost != 0 || res.Duplicated != 0 || res.OutOfOrder != 0 || res.Malformed != 0 {
				t.Errorf("lost %d dup %d ooo %d malformed %d, want 0", res.Lost, res.Duplicated, res.OutOfOrder, res.Malformed)
			}
			if res.Delivered != res.Expected {
				t.Errorf("delivered %d, want %d", res.Delivered, res.Expected)
			}
			if res.LatencyMs.P50 <= 0 || res.LatencySamples != int(res.Delivered) {
				t.Errorf("latency %+v from %d samples, want p50 > 0 and %d samples", res.LatencyMs, res.LatencySamples, res.Delivered)
			}
			if res.ServerCPUSeconds <= 0 || res.ServerRSSBytes <= 0 || res.DeliveriesPerServerCPUSec <= 0 {
				t.Errorf("server cpu %g s, rss %d, deliveries/cpu-s %g: want > 0",
					res.ServerCPUSeconds, res.ServerRSSBytes, res.DeliveriesPerServerCPUSec)
			}
			if res.ToolCPUSeconds <= 0 || res.DeliveriesPerSec <= 0 {
				t.Errorf("tool cpu %g, deliveries/s %g: want > 0", res.ToolCPUSeconds, res.DeliveriesPerSec)
			}
		})
	}
}

// TestInflightAgainstNode: a publisher with a window of unacknowledged
// publishes (pipelined frames, batched POSTs), as fast as it can, loses
// nothing and keeps its order on both transports.
func TestInflightAgainstNode(t *testing.T) {
	node := testproc.StartNode(t, nil, "--publish-rate", "-1")
	cases := []struct {
		transport string
		inflight  int
	}{{"websocket", 1}, {"websocket", 16}, {"long-polling", 1}, {"long-polling", 16}}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/inflight=%d", c.transport, c.inflight), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			res, err := Run(ctx, Config{URL: node.URL, Transport: c.transport, Scenario: ManyChannels,
				Subscribers: 12, Channels: 3, Publishers: 2, Inflight: c.inflight, DisableAck: true,
				Duration: time.Second, Drain: 5 * time.Second, SetupTimeout: 30 * time.Second,
				DialParallel: 8, MaxSamples: 1_000_000, ServerPIDs: []int{node.PID()}})
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res.Summary())
			// Enough publishes to have filled the window twice: the window
			// was exercised. (Not a speed goal: a loaded machine published
			// 17 in 300 ms with a window of 1.)
			if want := int64(2 * c.inflight); res.Published < want || res.PublishErrors != 0 {
				t.Errorf("published %d (errors %d), want at least %d and no errors", res.Published, res.PublishErrors, want)
			}
			if res.Lost != 0 || res.Duplicated != 0 || res.OutOfOrder != 0 || res.Malformed != 0 ||
				res.Delivered != res.Expected || res.ConnectFailures != 0 || res.SessionsFailed != 0 {
				t.Errorf("delivered %d/%d lost %d dup %d ooo %d malformed %d connect failures %d sessions failed %d",
					res.Delivered, res.Expected, res.Lost, res.Duplicated, res.OutOfOrder, res.Malformed,
					res.ConnectFailures, res.SessionsFailed)
			}
			if res.Params.Inflight != c.inflight {
				t.Errorf("reported inflight %d, want %d", res.Params.Inflight, c.inflight)
			}
		})
	}
}

func TestIdleSessionsAgainstNode(t *testing.T) {
	node := testproc.StartNode(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := Run(ctx, Config{URL: node.URL, Transport: "websocket", Scenario: IdleSessions,
		Subscribers: 20, Channels: 4, Duration: 300 * time.Millisecond, SetupTimeout: 30 * time.Second,
		DialParallel: 8, ServerPIDs: []int{node.PID()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Summary())
	if res.Sessions != 20 || res.ServerRSSBytes <= 0 || res.Published != 0 {
		t.Errorf("sessions %d rss %d published %d", res.Sessions, res.ServerRSSBytes, res.Published)
	}
}

func TestFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"--url", "http://127.0.0.1:1/cometd", "--scenario", "fanout",
		"--channels", "7", "--publishers", "3", "--server-pid", "12, 34", "--aux-pid", "5,6,7"}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Channels != 1 || cfg.Publishers != 1 || len(cfg.ServerPIDs) != 2 || cfg.ServerPIDs[1] != 34 ||
		len(cfg.AuxPIDs) != 3 || cfg.AuxPIDs[2] != 7 || cfg.Inflight != 32 {
		t.Errorf("fanout config = %+v", cfg)
	}
	for _, c := range []struct {
		arg  string
		want int
	}{{"1", 1}, {"64", 64}, {"0", 1}, {"-3", 1}} {
		cfg, err := parseFlags([]string{"--url", "http://x", "--inflight", c.arg}, testWriter{t})
		if err != nil || cfg.Inflight != c.want {
			t.Errorf("--inflight %s: %d, %v; want %d", c.arg, cfg.Inflight, err, c.want)
		}
	}
	for _, bad := range [][]string{
		{},
		{"--url", "ws://x"},
		{"--url", "http://x", "--transport", "jsonp"},
		{"--url", "http://x", "--scenario", "nope"},
		{"--url", "http://x", "--server-pid", "abc"},
		{"--url", "http://x", "--aux-pid", "1,x"},
		{"--url", "http://x", "--inflight", "many"},
	} {
		if _, err := parseFlags(bad, testWriter{t}); err == nil {
			t.Errorf("flags %q accepted", bad)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strconv.Quote(string(p)))
	return len(p), nil
}
