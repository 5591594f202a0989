// Package metrics defines the node's Prometheus collectors and adapts them
// to the broker's and the cluster's observer hooks, so that neither
// pkg/broker nor pkg/cluster imports Prometheus.
//
// Contract:
//   - No global state: New registers on the Registerer it is given (a node
//     uses its own prometheus.Registry, never the default one), so several
//     nodes (or tests) in one process never share series. Registering twice
//     on one Registerer panics (programmer error), as MustRegister does.
//   - Cheap on the hot path: every labelled child is bound once in New, so
//     an event is one atomic add (or one histogram observation), with no
//     allocation and no label hashing per message. Label values come from
//     fixed small sets: transport (long-polling, callback-polling,
//     websocket, other), result (ok, error; forwards also no_owner), Bayeux
//     error code (the protocol's codes, else "other") and Redis operation
//     (publish, history).
//   - *Metrics implements broker.Observer and cluster.Observer; pass it as
//     broker.Config.Observer, cluster.RedisConfig.Observer and
//     cluster.Config.Observer. The cluster series are registered only by
//     RegisterCluster, so a single node does not export empty cluster
//     series.
//   - Concurrency: every method is safe for concurrent use.
//
// Series (all prefixed bayeux_):
//
//	sessions{transport}                        gauge: live local sessions, by handshake transport
//	handshakes_total{result}                   counter: /meta/handshake, ok or error
//	connects_total                             counter: /meta/connect processed
//	subscribes_total                           counter: /meta/subscribe processed
//	publishes_total{result}                    counter: publishes to broadcast channels, ok or error
//	deliveries_total                           counter: publications enqueued to local sessions
//	errors_total{code}                         counter: failed replies written, by Bayeux error code
//	queue_overflows_total                      counter: sessions terminated by a full queue (409)
//	held_connects                              gauge: /meta/connect requests being held
//	gaps_total                                 counter: unrecoverable gaps reported by the engine
//	limit_refusals_total{limit}                counter: requests refused by a per-address limit (sessions_per_ip, held_per_ip)
//	redis_command_duration_seconds{op}         histogram: Redis publish script and history reads
//	redis_errors_total{op}                     counter: failed Redis publish / history commands
//	grpc_forwards_total{result}                counter: requests forwarded to a session's owner
//	gossip_members                             gauge: live cluster nodes, self included
//	build_info{version,revision,go_version}    gauge: 1, labelled with the running build (BuildInfo)
//
// And delivery_latency_seconds, a histogram of the time from the engine
// ordering a publication to handing it to a subscriber's transport (across
// nodes the publishing node's clock: skew shows in it).
package metrics
