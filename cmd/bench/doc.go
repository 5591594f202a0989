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
// Each publisher keeps up to --inflight publishes sent and not yet
// acknowledged (default 32; 1 is the old one-at-a-time publisher). On a
// websocket each publish is its own frame, pipelined on the one socket, so
// the server sees them in order. On long-polling, where concurrent POSTs
// could be reordered, the window is a Bayeux batch: one POST carries up to
// --inflight publishes and the next POST waits for its response. --rate is
// the total rate over all publishers (each gets rate/P on a fixed schedule,
// the publishers' schedules spread evenly over one interval so that the
// total is steady rather than P messages at once; a publisher that falls
// behind sends at once until it is back on schedule; on long-polling
// everything due goes in one POST); 0 means as fast as the window allows.
// Only acknowledged publications count as published and expected.
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
// Sessions are the tool's own lean Bayeux client (session.go), not
// pkg/client, so that the tool costs the shared CPU as little as possible:
// one goroutine per session (the websocket reader, which also sends the
// next /meta/connect, or the long-polling connect loop), no goroutine or
// allocation per message, and responses scanned in place (wire.go: one pass
// finds each message's channel, id, successful and data without decoding
// them; the payload is read by hand). It speaks what the scenarios need:
// handshake (ack extension unless --disable-ack), subscribe, connect,
// publish, disconnect. It does not re-handshake: a session the server drops
// is reported (sessions_failed, connect_failures) and stays dropped.
// tool_cpu_seconds reports its CPU.
//
// # Compression and bytes on the wire
//
// --ws-deflate offers permessage-deflate without context takeover on each
// websocket (coder/websocket; the tool compresses its own messages of 128
// bytes or more and inflates the server's). --payload-bytes pads each
// publication's data with that many bytes of words drawn at random (a
// field "x"), so that deliveries compress as chat-like JSON does, not as
// a run of one byte. Every socket the tool dials is counted:
// wire_bytes_in and wire_bytes_out are the TCP payload bytes read and
// written during the window (HTTP and websocket framing included, after
// compression), wire_bytes_in_per_delivery divides the first by the
// measured deliveries.
//
// # CPU and memory
//
// --server-pid takes comma-separated PIDs (e.g. every node of a cluster);
// CPU is utime+stime from /proc/PID/stat (assuming USER_HZ = 100, the Linux
// value on every mainstream architecture) and memory is VmRSS from
// /proc/PID/status, summed over the PIDs. --aux-pid does the same for
// helpers (Redis, a balancer), reported apart as aux_cpu_seconds. Tool CPU is getrusage(RUSAGE_SELF). With
// `go run ./cmd/node` pass the PID of the node binary (the child of the go
// command, e.g. `pgrep -P $GO_RUN_PID`), not the go command's.
//
// Every run is bounded: --setup-timeout for dialling and subscribing,
// --warmup + --duration for traffic, --drain for the tail, and a fixed
// bound for closing the sessions.
package main
