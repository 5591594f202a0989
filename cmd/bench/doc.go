// Command bench is a load tool for a Bayeux endpoint (this broker, or any
// Bayeux 1.0 server). It runs one bounded scenario and prints ONE JSON line
// (to --out, default stdout) plus a one-line human summary on stderr.
//
// # Scenarios
//
//   - fanout: --subscribers sessions on one channel, one publisher.
//   - many-channels: --subscribers sessions spread round-robin over
//     --channels channels (subscriber i on channel i mod C); --publishers
//     publishers, channel c owned by publisher c mod P, each publisher
//     cycling over its channels.
//   - max-throughput: the many-channels layout with --rate forced to 0
//     (as fast as possible); the figure of interest is deliveries_per_sec.
//   - idle-sessions: open --subscribers sessions (each subscribed to one of
//     --channels channels), no traffic, hold for --duration; report server
//     RSS per session = (RSS at the end of the hold - RSS before the first
//     dial) / N, summed over --server-pid.
//
// # Measurement
//
// Every message's data is {"p":publisher,"s":sequence,"t":send-unix-nanos}.
// Each publisher publishes sequentially and waits for the server's
// acknowledgement before the next message (pkg/client.Publish), so its
// per-publisher order is a real order. --rate is the total rate over all
// publishers (each gets rate/P, on a fixed schedule; a publisher that falls
// behind sends at once until it is back on schedule); 0 means as fast as the
// acknowledgements allow.
//
// Every subscriber keeps, per publisher, a bitset of the sequences it has
// received and the highest sequence so far: a sequence seen twice is a
// duplicate, a sequence lower than the highest seen is out of order.
// After the publishers stop, the tool waits until every subscriber has
// received everything it expects or --drain expires. lost = expected -
// distinct received, per subscriber, where expected is the number of
// acknowledged publications on the subscriber's channel.
//
// Messages sent during --warmup count for published/delivered/lost but not
// for latency, deliveries_per_sec or the CPU figures. The measurement window
// runs from the end of the warm-up to the moment the drain ended.
//
// Latency (publish send time to handler call, same clock: the tool is both
// publisher and subscriber) is kept as raw samples in per-subscriber slices
// preallocated up front and bounded by --max-samples in total (samples past
// the bound are counted in latency_samples_dropped, not stored); the
// percentiles are exact nearest-rank percentiles of the kept samples.
//
// # Sessions
//
// Sessions use pkg/client (one Client per subscriber or publisher, with the
// ack extension unless --disable-ack). That puts the client's own cost (4
// goroutines per websocket session, JSON decoding of every delivery) on the
// same CPU as the server; tool_cpu_seconds reports it so that the share is
// visible. A leaner raw transport is not written yet.
//
// # CPU and memory
//
// --server-pid takes comma-separated PIDs; CPU is utime+stime from
// /proc/PID/stat (assuming USER_HZ = 100, the Linux value on every
// mainstream architecture) and memory is VmRSS from /proc/PID/status,
// summed over the PIDs. Tool CPU is getrusage(RUSAGE_SELF). With
// `go run ./cmd/node` pass the PID of the node binary (the child of the go
// command, e.g. `pgrep -P $GO_RUN_PID`), not the go command's.
//
// Every run is bounded: --setup-timeout for dialling and subscribing,
// --warmup + --duration for traffic, --drain for the tail, and a fixed
// bound for closing the sessions.
package main
