// Package cluster turns broker nodes into one horizontally clustered
// Bayeux server:
//
//   - Redis is the engine (a broker engine.Engine): one Lua script per
//     publish assigns the channel's next offset, appends it to a capped
//     history stream and publishes it to the concrete channel and to every
//     wildcard pattern that could match it, so every node sees a channel's
//     messages in one order, and the Redis work per publish does not depend
//     on how many clients subscribe. Each node holds one Redis subscription
//     per pattern in use on it (the broker refcounts), never one per client.
//     Redis is one instance (redis://), a primary with replicas behind
//     Sentinel (redis+sentinel://; each new connection is confirmed with
//     a sentinel once made, redis_primary.go) or a Redis Cluster
//     (redis+cluster://); RedisConfig.WaitReplicas acknowledges a publish
//     only once replicas have it. The node's publishes, from all sessions,
//     are sent in pipelines by one flusher (redis_publisher.go), in queue
//     order.
//   - hashicorp/memberlist is the membership: which nodes are alive, and the
//     node tag, gRPC address and protocol version of each.
//   - gRPC (api/proto/cluster/v1) carries requests to the node that owns a
//     session: the owner's tag is the clientId's prefix, so any node serves
//     any request of any session without sticky load balancing. Forwarded
//     requests share one long-lived Node.Forward stream per peer, matched
//     to their replies by id (forward_stream.go, forward_serve.go). Its Call
//     RPC also carries the requests of node-level services to peers
//     (HandleCall registers a handler by method name; the server API uses it
//     for cluster-wide presence and session control).
//
// Fencing (lease.go): each node holds a lease in Redis, renewed well
// within its time to live and measured on the node's own clock, so that
// it expires locally first. Without it the node acts on no session (the
// SessionStore is also the broker's Fence); peers adopt its sessions only
// once the lease is gone; taking it again (a new generation, written into
// the owner of every record) re-validates which sessions are still its.
//
// Readiness answers /readyz: not ready while starting, draining or joined
// to nobody; ready but reporting it during a backplane outage.
//
// The seam with the broker runs one way: the broker defines the interfaces
// (engine.Engine, broker.Router with broker.Members, broker.SessionStore,
// broker.HandOverStore, broker.Fence) and this package implements them
// (Redis; router.go: membership facts and node-to-node calls;
// SessionStore: records, compare-and-set claim, lease); it calls the
// broker only through the Broker interface: to serve what peers forward
// (ServeForwarded, LocalSessionOp, in rpc.go), to install itself
// (SetCluster) and to report a lost peer (PeerLost). Session adoption,
// who may take a record over and when, is decided and done in the broker
// (pkg/broker/adopt*.go); this package supplies only the primitives.
//
// Concurrency: every exported method is safe for concurrent use. Memberlist
// delegates only update a map under a short lock and never block. Each
// pub/sub connection (one on a single Redis; one per partition on Redis
// Cluster) has two goroutines (redis_batch.go): a pump that reads it into
// a bounded queue (512; full, the pump waits and the socket and Redis's
// output buffer take the back-pressure) and a consumer that delivers to
// the broker, in the connection's order, everything ready in the queue as
// one batch of up to 256 (engine.BatchHandler), never waiting for a batch
// to fill. A forward stream has, on the forwarding node, a sender (writing
// the queued requests as one message, after yielding once so that the
// goroutines ready to run queue theirs first; fwdQueued of them at most, past
// which a request fails at once) and a receiver; on the owner, a reader,
// and one worker per request in flight (fwdInflight at most, past which
// a request is refused; up to fwdIdleWorkers idle workers kept).
package cluster
