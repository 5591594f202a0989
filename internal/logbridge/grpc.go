package logbridge

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// GRPCLogger implements grpclog.LoggerV2 on a *slog.Logger (install it
// with grpclog.SetLoggerV2, process-global, once at start). gRPC's info
// and warning lines (connection attempts, reconnects: what gRPC's own
// default logger hides) are DEBUG; its errors are ERROR. Fatal logs and
// exits, as the interface requires.
type GRPCLogger struct{ l *slog.Logger }

// GRPC returns gRPC's logger writing to l.
func GRPC(l *slog.Logger) *GRPCLogger { return &GRPCLogger{l: l} }

// log writes one gRPC line; gRPC's "[core] " component prefix becomes the
// attribute subsystem=core.
func (g *GRPCLogger) log(level slog.Level, msg string) {
	ctx := context.Background()
	if !g.l.Enabled(ctx, level) {
		return
	}
	msg = strings.TrimSpace(msg)
	if rest, ok := strings.CutPrefix(msg, "["); ok {
		if sub, text, ok := strings.Cut(rest, "] "); ok && !strings.ContainsAny(sub, " []") {
			g.l.Log(ctx, level, text, "subsystem", sub)
			return
		}
	}
	g.l.Log(ctx, level, msg)
}

func (g *GRPCLogger) Info(args ...any)   { g.log(slog.LevelDebug, fmt.Sprint(args...)) }
func (g *GRPCLogger) Infoln(args ...any) { g.log(slog.LevelDebug, fmt.Sprintln(args...)) }
func (g *GRPCLogger) Infof(format string, args ...any) {
	g.log(slog.LevelDebug, fmt.Sprintf(format, args...))
}
func (g *GRPCLogger) Warning(args ...any)   { g.log(slog.LevelDebug, fmt.Sprint(args...)) }
func (g *GRPCLogger) Warningln(args ...any) { g.log(slog.LevelDebug, fmt.Sprintln(args...)) }
func (g *GRPCLogger) Warningf(format string, args ...any) {
	g.log(slog.LevelDebug, fmt.Sprintf(format, args...))
}
func (g *GRPCLogger) Error(args ...any)   { g.log(slog.LevelError, fmt.Sprint(args...)) }
func (g *GRPCLogger) Errorln(args ...any) { g.log(slog.LevelError, fmt.Sprintln(args...)) }
func (g *GRPCLogger) Errorf(format string, args ...any) {
	g.log(slog.LevelError, fmt.Sprintf(format, args...))
}
func (g *GRPCLogger) Fatal(args ...any)                 { g.fatal(fmt.Sprint(args...)) }
func (g *GRPCLogger) Fatalln(args ...any)               { g.fatal(fmt.Sprintln(args...)) }
func (g *GRPCLogger) Fatalf(format string, args ...any) { g.fatal(fmt.Sprintf(format, args...)) }

// V reports whether verbose level l is logged: gRPC's verbose lines are
// DEBUG.
func (g *GRPCLogger) V(l int) bool { return g.l.Enabled(context.Background(), slog.LevelDebug) }

func (g *GRPCLogger) fatal(msg string) {
	g.log(slog.LevelError, msg)
	os.Exit(1)
}
