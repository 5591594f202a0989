// Package engine defines the broker's backend contract, Engine, and provides
// the embedded single-node implementation, Memory.
//
// An Engine orders and distributes publications. It assigns each publication
// on a concrete channel a strictly increasing Offset within an Epoch, and
// hands every publication whose channel matches a pattern the node has
// subscribed to, exactly once per node, to the node's Handler, in offset order
// per channel. Payload bytes are encoded once by the publisher's node and
// shared, read-only, by every receiver.
//
// The Redis-backed cluster engine (package cluster) implements the same
// interface; the broker does not know which one it runs on. An engine may
// also implement AsyncPublisher (the Redis engine does): the broker then
// queues a connection's publishes and collects their outcomes afterwards,
// in order, so that they are in flight together.
package engine
