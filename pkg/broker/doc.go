// Package broker is a Bayeux 1.0 server: sessions, meta channels,
// subscriptions, fan-out, extensions, and the long-polling, callback-polling
// and websocket transports, exposed as an http.Handler.
//
// Contracts:
//   - Concurrency: every exported method of Broker and Session is safe for
//     concurrent use. Lock order is Broker.sessionsMu, then subIndex.opMu,
//     then subIndex.mu, then Session.mu; no lock is held while calling an
//     Extension, a Policy or a service handler.
//   - Ordering: a session receives the publications of one channel in the
//     order the Engine assigned their offsets. Replies to one request are
//     written in the order of its messages, deliveries before the
//     /meta/connect reply that carries them.
//   - Ownership: publication payloads are encoded once per publish and shared
//     read-only by every session queue and transport; nobody mutates them.
//   - Bounds: every session queue is bounded (messages and bytes); a session
//     whose queue overflows is terminated and told so (error 409 with
//     reconnect "handshake" advice), never left silently behind.
//   - Cluster seam: the Engine carries publications between nodes; the
//     Router (set by package cluster) forwards requests for sessions owned
//     by other nodes, which serve them with ServeForwarded. Transports only
//     frame bytes and know neither.
package broker
