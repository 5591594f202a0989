package cluster

import "time"

// Redis operations reported to an Observer.
const (
	OpPublish = "publish" // one publish: its wait in the queue and its pipeline (EVALSHA, EVAL on NOSCRIPT)
	OpHistory = "history" // the history read (HMGET + XRANGE pipeline)
)

// Results of forwarding a request to a session's owner.
const (
	ForwardOK      = "ok"       // the owner answered
	ForwardNoOwner = "no_owner" // no live node owns the session's tag
	ForwardError   = "error"    // the gRPC call (or dialing) failed
)

// Observer receives the cluster's operational events, for metrics. It is
// optional (RedisConfig.Observer, Config.Observer); nil costs one nil check.
//
// Contract: methods are called concurrently, sometimes under short locks, so
// they must be cheap and must not block. String arguments are always one of
// the constants above.
type Observer interface {
	// RedisCommand reports one Redis round trip of op, its duration and its
	// error (nil on success; a missing key is not an error).
	RedisCommand(op string, d time.Duration, err error)
	// Forward reports one request forwarded over gRPC with its result.
	Forward(result string)
	// Members reports the number of live nodes (self included) after every
	// membership change.
	Members(n int)
}
