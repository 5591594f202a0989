// Package protocol is the Bayeux 1.0 wire format: the Message type, batch
// decoding with per-message errors, reply encoding, advice, and the error
// grammar "NNN:args:message".
//
// Contract: decoding never panics on any input and reports each malformed
// message on its own, so one bad message in a batch does not spoil the others.
// Decoded messages are owned by the caller; RawMessage fields alias the
// request body, which must therefore not be reused while they are in use.
// Nothing in this package keeps state; every function is safe for concurrent
// use.
package protocol
