package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
)

// SessionStore keeps session records in Redis for adoption (it implements
// broker.SessionStore). A record is a hash "<prefix>:s:{<id>}" with the
// owner's node tag (field o; "" once released by a draining node) and the
// JSON state (field s), expiring after TTL unless refreshed. Every write is
// a compare-and-set on the owner in one Lua script, so at most one node
// owns a session at any time: a node that lost a session (taken over while
// it was cut off) learns it at its next write.
type SessionStore struct {
	client redis.UniversalClient
	prefix string
	tag    string // this node
	ttl    time.Duration
	save   *redis.Script
	claim  *redis.Script
	del    *redis.Script
}

var _ broker.SessionStore = (*SessionStore)(nil)

// Save: KEYS[1] record; ARGV owner-to-write, state, ttl ms, caller tag.
// Fails (0) when another node owns the record; a missing record is created
// (it was lost with Redis data, or expired while the owner lived).
var saveLua = `
local o = redis.call('HGET', KEYS[1], 'o')
if o and o ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'o', ARGV[1], 's', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`

// Claim: KEYS[1] record; ARGV expected owner, new owner, ttl ms. Returns
// {1, state} when claimed, {0, current owner} when another node was first,
// and nil when there is no record.
var claimLua = `
local o = redis.call('HGET', KEYS[1], 'o')
if not o then return nil end
if o ~= ARGV[1] then return {0, o} end
redis.call('HSET', KEYS[1], 'o', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, redis.call('HGET', KEYS[1], 's')}`

// Delete: KEYS[1] record; ARGV caller tag. Only the owner deletes.
var deleteLua = `
if redis.call('HGET', KEYS[1], 'o') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`

// NewSessionStore returns the store of node tag over client. ttl is how
// long a record outlives its last write or refresh: a few MaxIntervals, so
// that the clients of a dead node find their sessions when they come back.
func NewSessionStore(client redis.UniversalClient, prefix, tag string, ttl time.Duration) *SessionStore {
	if prefix == "" {
		prefix = "bx"
	}
	return &SessionStore{
		client: client, prefix: prefix, tag: tag, ttl: ttl,
		save: redis.NewScript(saveLua), claim: redis.NewScript(claimLua), del: redis.NewScript(deleteLua),
	}
}

func (s *SessionStore) key(id string) string { return s.prefix + ":s:{" + id + "}" }

func (s *SessionStore) ttlMillis() int64 { return s.ttl.Milliseconds() }

// Save implements broker.SessionStore.
func (s *SessionStore) Save(ctx context.Context, st *broker.SessionState) error {
	return s.write(ctx, s.client, st, s.tag)
}

func (s *SessionStore) write(ctx context.Context, c redis.Scripter, st *broker.SessionState, owner string) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode session %s: %w", st.ID, err)
	}
	n, err := s.save.Run(ctx, c, []string{s.key(st.ID)}, owner, b, s.ttlMillis(), s.tag).Int()
	if err != nil {
		return fmt.Errorf("save session %s: %w", st.ID, err)
	}
	if n == 0 {
		return broker.ErrOwnershipLost
	}
	return nil
}

// Release implements broker.SessionStore: one pipelined round trip.
func (s *SessionStore) Release(ctx context.Context, states []*broker.SessionState) error {
	if len(states) == 0 {
		return nil
	}
	// Load the script once so that the pipeline's EVALSHAs find it.
	if err := s.save.Load(ctx, s.client).Err(); err != nil {
		return fmt.Errorf("release sessions: %w", err)
	}
	pipe := s.client.Pipeline()
	for _, st := range states {
		b, err := json.Marshal(st)
		if err != nil {
			return fmt.Errorf("encode session %s: %w", st.ID, err)
		}
		// A 0 result means another node already took the session: fine.
		s.save.EvalSha(ctx, pipe, []string{s.key(st.ID)}, "", b, s.ttlMillis(), s.tag)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("release %d sessions: %w", len(states), err)
	}
	return nil
}

// Delete implements broker.SessionStore.
func (s *SessionStore) Delete(ctx context.Context, id string) error {
	if err := s.del.Run(ctx, s.client, []string{s.key(id)}, s.tag).Err(); err != nil {
		return fmt.Errorf("delete session %s: %w", id, err)
	}
	return nil
}

// DeleteMany deletes the records of ids (those this node still owns) in
// pipelined round trips of up to 1000: the broker's sweeper removes the
// records of every session that ended in one sweep this way.
func (s *SessionStore) DeleteMany(ctx context.Context, ids []string) error {
	const chunk = 1000
	for len(ids) > 0 {
		n := min(chunk, len(ids))
		pipe := s.client.Pipeline()
		for _, id := range ids[:n] {
			s.del.Eval(ctx, pipe, []string{s.key(id)}, s.tag)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("delete %d session records: %w", n, err)
		}
		ids = ids[n:]
	}
	return nil
}

// Refresh implements broker.SessionStore: pipelined PEXPIREs, in chunks.
func (s *SessionStore) Refresh(ctx context.Context, ids []string) ([]string, error) {
	const chunk = 1000
	var missing []string
	for len(ids) > 0 {
		n := min(chunk, len(ids))
		pipe := s.client.Pipeline()
		cmds := make([]*redis.BoolCmd, n)
		for i, id := range ids[:n] {
			cmds[i] = pipe.PExpire(ctx, s.key(id), s.ttl)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return missing, fmt.Errorf("refresh %d sessions: %w", n, err)
		}
		for i, c := range cmds {
			if !c.Val() {
				missing = append(missing, ids[i])
			}
		}
		ids = ids[n:]
	}
	return missing, nil
}

// errNoRecord means the session has no record (never existed, ended, or
// expired).
var errNoRecord = errors.New("cluster: no session record")

// Owner returns the tag of the node owning id ("" when released).
func (s *SessionStore) Owner(ctx context.Context, id string) (string, error) {
	o, err := s.client.HGet(ctx, s.key(id), "o").Result()
	if errors.Is(err, redis.Nil) {
		return "", errNoRecord
	}
	if err != nil {
		return "", fmt.Errorf("session owner %s: %w", id, err)
	}
	return o, nil
}

// Claim takes id over for this node if its owner is still expected. It
// returns the state, or errClaimLost with the current owner.
func (s *SessionStore) Claim(ctx context.Context, id, expected string) (*broker.SessionState, string, error) {
	res, err := s.claim.Run(ctx, s.client, []string{s.key(id)}, expected, s.tag, s.ttlMillis()).Slice()
	if errors.Is(err, redis.Nil) {
		return nil, "", errNoRecord
	}
	if err != nil {
		return nil, "", fmt.Errorf("claim session %s: %w", id, err)
	}
	if len(res) != 2 {
		return nil, "", fmt.Errorf("claim session %s: unexpected reply %v", id, res)
	}
	if ok, _ := res[0].(int64); ok != 1 {
		cur, _ := res[1].(string)
		return nil, cur, errClaimLost
	}
	raw, _ := res[1].(string)
	var st broker.SessionState
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return nil, "", fmt.Errorf("decode session %s: %w", id, err)
	}
	return &st, s.tag, nil
}

// errClaimLost means another node claimed the session first.
var errClaimLost = errors.New("cluster: session claimed by another node")
