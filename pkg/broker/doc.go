// Package broker is a Bayeux 1.0 server: sessions, meta channels,
// subscriptions, fan-out, extensions, and the long-polling, callback-polling
// and websocket transports, exposed as an http.Handler.
//
// Structure (docs/architecture.md, sections 2 to 4):
//   - One request path: every transport decodes a request once and hands it
//     to Broker.serve (serve.go), which routes it, then forwards it to the
//     session's owner (Router) or processes it here (process.go). A request
//     forwarded by another node (ServeForwarded) goes through serve too.
//     A forwarded connect is bounded on the forwarding node: without the
//     owner's reply within its hold plus a margin, the owner is asked to
//     release it, and if it cannot be, it is cancelled there and answered
//     here (forward_overdue.go).
//     Transports only read requests, hold connects and write bytes.
//   - One held connect: a /meta/connect that is not answered at once is a
//     heldConnect (held.go), which owns its limits, timeout, due test and
//     its one answer; transports hold it through connectHolder (schedule),
//     and every way a held connect ends is decided in heldConnect.answer.
//   - State with its own lock: the session table (sessions.go), the limits
//     (limits.go: counts taken as leases), the connection registry
//     (conns.go), each session (session.go).
//   - Socket machinery free of Bayeux lives in internal/netpoll.
//
// Contracts:
//   - Concurrency: every exported method of Broker and Session is safe for
//     concurrent use. Locks are taken in one order (docs/architecture.md,
//     "Lock order"): Session.saveMu, subIndex.opMu, subIndex.mu, wsConn.mu,
//     Session.mu, parkedPoll.mu, heldConnect.mu; the session table, limit,
//     registry, poller and sequencer locks are leaves. No lock is held while
//     calling an Extension, a Policy or a service handler; Session.saveMu
//     (only it) is held across the SessionStore write and the history reads
//     of a catch-up or replay.
//   - Ordering: a session receives the publications of one channel in the
//     order the Engine assigned their offsets. Replies to one request are
//     written in the order of its messages, deliveries before the
//     /meta/connect reply that carries them.
//   - Ownership: publication payloads are encoded once per publish and shared
//     read-only by every session queue and transport; nobody mutates them.
//   - Bounds: every session queue is bounded (messages and bytes); a session
//     whose queue overflows is terminated and told so (error 409 with
//     reconnect "handshake" advice), never left silently behind.
//   - Cluster seam: the broker defines what it needs (Engine; Router, with
//     the membership facts of Members; SessionStore and HandOverStore, the
//     records with their compare-and-set writes; and Fence: the store's
//     lease, checked before every delivery and every request) and package
//     cluster implements it; the cluster calls the broker back only
//     through ServeForwarded, LocalSessionOp, SetCluster, PeerLost and the
//     Fence's regain callback. Transports know neither side.
//   - Adoption is decided and done here, in the adopt*.go files (adopt.go
//     lists them): who serves a session this node does not hold and when
//     its record may be taken over (resolve), the claim, recreating the
//     session and catching it up, the drain's release, the hand-over to a
//     websocket's node, and the fence. The cluster only answers.
//   - Test hooks: the debug API (DebugHandler, HandleDebugServices) arms
//     faults (debug.go); nothing test-only travels between nodes.
package broker
