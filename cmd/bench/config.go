package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Scenario names.
const (
	Fanout        = "fanout"
	ManyChannels  = "many-channels"
	MaxThroughput = "max-throughput"
	IdleSessions  = "idle-sessions"
)

// Config is one run of the tool.
type Config struct {
	URL          string        `json:"-"`
	Transport    string        `json:"-"`
	Scenario     string        `json:"-"`
	Subscribers  int           `json:"subscribers"`
	Channels     int           `json:"channels"`
	Publishers   int           `json:"publishers"`
	Rate         float64       `json:"rate"`
	Duration     time.Duration `json:"-"`
	Warmup       time.Duration `json:"-"`
	Drain        time.Duration `json:"-"`
	SetupTimeout time.Duration `json:"-"`
	DialParallel int           `json:"dial_parallel"`
	MaxSamples   int           `json:"max_samples"`
	Inflight     int           `json:"inflight"`
	DisableAck   bool          `json:"disable_ack"`
	WSDeflate    bool          `json:"ws_deflate"`
	PayloadBytes int           `json:"payload_bytes"`
	ServerPIDs   []int         `json:"server_pids,omitempty"`
	AuxPIDs      []int         `json:"aux_pids,omitempty"`
	Out          string        `json:"-"`
}

// parseFlags fills a Config from command-line arguments.
func parseFlags(args []string, stderr io.Writer) (Config, error) {
	var c Config
	var pids, aux string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.URL, "url", "", "Bayeux endpoint, e.g. http://127.0.0.1:8080/cometd (required)")
	fs.StringVar(&c.Transport, "transport", "websocket", "websocket or long-polling")
	fs.StringVar(&c.Scenario, "scenario", Fanout, "fanout, many-channels, max-throughput or idle-sessions")
	fs.IntVar(&c.Subscribers, "subscribers", 100, "subscriber sessions (idle-sessions: sessions)")
	fs.IntVar(&c.Channels, "channels", 1, "channels (fanout: always 1)")
	fs.IntVar(&c.Publishers, "publishers", 1, "publisher sessions (fanout: always 1)")
	fs.Float64Var(&c.Rate, "rate", 0, "total publications per second over all publishers (0: as fast as possible)")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "measured traffic (idle-sessions: hold time)")
	fs.DurationVar(&c.Warmup, "warmup", 1*time.Second, "traffic before the measurement window")
	fs.DurationVar(&c.Drain, "drain", 5*time.Second, "longest wait for the last deliveries after the publishers stop")
	fs.DurationVar(&c.SetupTimeout, "setup-timeout", 60*time.Second, "bound for dialling and subscribing every session")
	fs.IntVar(&c.DialParallel, "dial-parallel", 32, "sessions dialled concurrently during setup")
	fs.IntVar(&c.MaxSamples, "max-samples", 4_000_000, "latency samples kept in total (8 bytes each, preallocated)")
	fs.IntVar(&c.Inflight, "inflight", 32, "publishes per publisher sent and not yet acknowledged (websocket: pipelined frames; long-polling: publishes per batched POST)")
	fs.BoolVar(&c.DisableAck, "disable-ack", false, "turn off the client's ack extension")
	fs.BoolVar(&c.WSDeflate, "ws-deflate", false, "offer permessage-deflate (no context takeover) on websockets and compress messages of 128 bytes or more")
	fs.IntVar(&c.PayloadBytes, "payload-bytes", 0, "pad each publication's data with about this many bytes of chat-like text (a field \"x\"), for realistic compression")
	fs.StringVar(&pids, "server-pid", "", "comma-separated server PIDs to sample CPU and RSS from /proc")
	fs.StringVar(&aux, "aux-pid", "", "comma-separated PIDs of helpers (Redis, balancer) whose CPU is reported apart (aux_cpu_seconds)")
	fs.StringVar(&c.Out, "out", "", "file to append the JSON result line to (default stdout)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if c.ServerPIDs, err = parsePIDs(pids); err != nil {
		return c, err
	}
	if c.AuxPIDs, err = parsePIDs(aux); err != nil {
		return c, err
	}
	return c, c.normalize()
}

func parsePIDs(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--server-pid: bad PID %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// normalize validates c and applies the scenario's fixed parameters.
func (c *Config) normalize() error {
	if c.URL == "" {
		return errors.New("--url is required")
	}
	if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		return fmt.Errorf("--url %q must be http:// or https://", c.URL)
	}
	if c.Transport != "websocket" && c.Transport != "long-polling" {
		return fmt.Errorf("--transport %q: want websocket or long-polling", c.Transport)
	}
	switch c.Scenario {
	case Fanout:
		c.Channels, c.Publishers = 1, 1
	case ManyChannels:
	case MaxThroughput:
		c.Rate = 0
	case IdleSessions:
		c.Publishers, c.Rate = 0, 0
	default:
		return fmt.Errorf("--scenario %q: want fanout, many-channels, max-throughput or idle-sessions", c.Scenario)
	}
	if c.Subscribers < 1 || c.Channels < 1 {
		return errors.New("--subscribers and --channels must be at least 1")
	}
	if c.Scenario != IdleSessions && c.Publishers < 1 {
		return errors.New("--publishers must be at least 1")
	}
	if c.Rate < 0 || c.Duration <= 0 || c.Warmup < 0 || c.Drain < 0 || c.SetupTimeout <= 0 {
		return errors.New("--rate, --warmup, --drain must be >= 0; --duration, --setup-timeout > 0")
	}
	if c.PayloadBytes < 0 {
		return errors.New("--payload-bytes must be >= 0")
	}
	if c.Inflight < 1 {
		c.Inflight = 1
	}
	if c.DialParallel < 1 {
		c.DialParallel = 1
	}
	if c.MaxSamples < 0 {
		c.MaxSamples = 0
	}
	return nil
}
