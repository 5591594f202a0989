package logbridge

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"strings"
)

// RedisLogger implements go-redis's logging interface (Printf with a
// context) on a *slog.Logger.
type RedisLogger struct{ l *slog.Logger }

// Redis returns go-redis's logger writing to l.
func Redis(l *slog.Logger) *RedisLogger { return &RedisLogger{l: l} }

// Printf logs one go-redis line at WARN.
func (r *RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	if !r.l.Enabled(ctx, slog.LevelWarn) {
		return
	}
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	r.l.Log(ctx, slog.LevelWarn, strings.TrimPrefix(msg, "redis: "))
}

// Memberlist returns a *log.Logger for memberlist.Config.Logger writing to
// l at the level each line names. quiet, if not nil, reports that the
// node is leaving: memberlist then closes its sockets under its own
// goroutines, whose complaints ("use of closed network connection", UDP
// probes failing) are no news, and its lines are logged at DEBUG.
func Memberlist(l *slog.Logger, quiet func() bool) *log.Logger {
	return log.New(memberlistWriter{l: l, quiet: quiet}, "", 0)
}

type memberlistWriter struct {
	l     *slog.Logger
	quiet func() bool
}

// levels maps memberlist's prefixes to slog levels.
var levels = []struct {
	prefix string
	level  slog.Level
}{
	{"[DEBUG]", slog.LevelDebug},
	{"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn},
	{"[ERR]", slog.LevelError},
	{"[ERROR]", slog.LevelError},
}

// Write logs one line (log.Logger writes each line in one call).
func (w memberlistWriter) Write(p []byte) (int, error) {
	level, msg := parseLine(string(p))
	if w.quiet != nil && w.quiet() {
		level = slog.LevelDebug
	}
	if w.l.Enabled(context.Background(), level) {
		w.l.Log(context.Background(), level, msg)
	}
	return len(p), nil
}

// parseLine splits "[WARN] memberlist: text" into WARN and "text"; a line
// without a known prefix is INFO.
func parseLine(s string) (slog.Level, string) {
	s = strings.TrimSpace(s)
	level := slog.LevelInfo
	for _, l := range levels {
		if rest, ok := strings.CutPrefix(s, l.prefix); ok {
			level, s = l.level, strings.TrimSpace(rest)
			break
		}
	}
	return level, strings.TrimPrefix(s, "memberlist: ")
}
