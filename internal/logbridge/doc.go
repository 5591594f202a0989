// Package logbridge routes the log output of the libraries the node uses
// through log/slog, so that every line the node writes has the format
// and level the operator chose (--log-format, --log-level):
//
//   - Redis adapts go-redis's logger interface (installed with
//     redis.SetLogger, which is process-global: the node sets it once, at
//     start, in cmd/node). go-redis reports only trouble through it
//     (dropped connections, failing pings), so its lines are WARN.
//   - Memberlist returns a *log.Logger for memberlist.Config.Logger whose
//     lines are parsed for memberlist's "[LEVEL] memberlist: " prefix:
//     [DEBUG], [INFO], [WARN] and [ERR] become slog's levels and the prefix
//     is dropped from the message.
//   - GRPC implements grpclog.LoggerV2 (installed with grpclog.SetLoggerV2,
//     process-global, once at start): gRPC's info and warning lines are
//     DEBUG (its own default logger hides them), its errors ERROR; its
//     "[core] " prefix becomes the attribute subsystem=core.
//
// Neither holds state of its own beyond the *slog.Logger it is given.
package logbridge
