// Package ext holds the broker's built-in extensions.
//
//   - Ack: the CometD acknowledgement extension. Handshake ext.ack=true both
//     ways; each /meta/connect carries the last batch id the client received
//     and each connect reply the id of the batch it carries. Unacknowledged
//     batches are resent in order ahead of new messages; an acknowledged
//     message is never sent again.
//   - TimeSync: the CometD timesync extension; replies carry
//     {tc, ts, p, a} so the client can estimate its clock offset.
//
// Both are stateless values; per-session state lives in the broker.Session
// (safe for concurrent use).
package ext
