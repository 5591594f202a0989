package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/grpclog"

	"github.com/bayeux-cluster/bayeux/internal/buildinfo"
	"github.com/bayeux-cluster/bayeux/internal/logbridge"
)

func main() {
	if code, ok := subcommand(os.Args[1:], os.Stderr); ok {
		os.Exit(code)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	if err != nil {
		// One line: a configuration error names the setting, what was
		// given and what is expected (exit 2); anything else exits 1.
		fmt.Fprintln(os.Stderr, "bayeux-node:", err)
		var ce *configError
		if errors.As(err, &ce) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// configError is a configuration the node refuses before starting.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// run starts the node and blocks until ctx is cancelled (a signal), then
// shuts down within the grace period. environ is the process environment
// (KEY=VALUE), of which the BAYEUX_* variables are settings.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	c, err := parseConfig(args, environ)
	switch {
	case errors.Is(err, flag.ErrHelp):
		printUsage(stdout)
		return nil
	case err != nil:
		return &configError{err}
	case c.Version:
		fmt.Fprintln(stdout, buildinfo.Read())
		return nil
	case c.PrintConfig:
		return printConfig(c, stdout)
	}
	log := newLogger(c, stderr)
	if c.GCPercent > 0 && lookupEnv(environ, "GOGC") == "" {
		debug.SetGCPercent(c.GCPercent)
	}
	if c.Redis != "" {
		if c.NodeID == "" {
			c.NodeID = defaultNodeID()
		}
		log = log.With("node", c.NodeID)
	}
	routeLibraryLogs(log)
	n, err := newNode(ctx, c, log)
	if err != nil {
		return err
	}
	return n.serve(ctx, stdout)
}

// newLogger is the node's one logger: every line, the libraries' included
// (internal/logbridge), goes through it in the chosen format. Durations are
// written as text (1.5s, also in JSON) and an attribute holding nil (a
// nil error) is left out.
func newLogger(c *config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.LogLevel)) // checked by validate
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		switch a.Value.Kind() {
		case slog.KindDuration:
			return slog.String(a.Key, a.Value.Duration().String())
		case slog.KindAny:
			if a.Value.Any() == nil {
				return slog.Attr{}
			}
		}
		return a
	}}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// routeLibraryLogs sends the logs of the libraries through log: go-redis,
// gRPC and the standard log package each have one process-wide logger,
// set here once, before any client or server exists (memberlist takes its
// logger per instance, in pkg/cluster).
func routeLibraryLogs(log *slog.Logger) {
	redis.SetLogger(logbridge.Redis(log.With("component", "go-redis")))
	grpclog.SetLoggerV2(logbridge.GRPC(log.With("component", "grpc")))
	slog.SetDefault(log) // also the standard log package's output
}

func lookupEnv(environ []string, key string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// defaultNodeID is the hostname plus a random suffix: unique per process
// incarnation, so a restarted node gets a new tag.
func defaultNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// displayAddr turns a listener address into a host:port a browser can use.
func displayAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	host := tcp.IP.String()
	if tcp.IP == nil || tcp.IP.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, fmt.Sprint(tcp.Port))
}
