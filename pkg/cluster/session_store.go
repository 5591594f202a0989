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
// owner (field o: the node tag and, with a lease, its generation,
// "<tag>.<gen>"; "" once released by a draining node) and the JSON state
// (field s), expiring after TTL unless refreshed. Every write is a
// compare-and-set on the owner in one Lua script, so at most one node
// owns a session at any time: a node that lost a session (taken over while
// it was cut off) learns it at its next write, or when it takes its lease
// again (Revalidate).
//
// With a lease (UseLease) the store also fences the node (it implements
// broker.Fence): no write while the lease is not held.
type SessionStore struct {
	client redis.UniversalClient
	prefix string
	tag    string // this node
	ttl    time.Duration
	lease  *Lease // nil: no fencing (owner is the bare tag)
	save   *redis.Script
	claim  *redis.Script
	del    *redis.Script
	reval  *redis.Script
}

var (
	_ broker.SessionStore  = (*SessionStore)(nil)
	_ broker.HandOverStore = (*SessionStore)(nil)
)

// ownerMatch splits an owner string into node tag and generation ("" for
// none) inside the scripts.
const ownerMatch = `string.match(o, '^([^.]*)%.?(%d*)$')`

// Save: KEYS[1] record; ARGV owner-to-write, state, ttl ms, caller tag,
// caller generation. Fails (0) when another node owns the record (or it
// was released), and (2) when it belongs to a newer generation of this
// node (the caller's generation is stale: try again). A record of an
// older generation of this node is taken over (this node holds its lease
// again, so no peer adopted the session since). A missing record is
// created (it was lost with Redis data, or expired while the owner lived).
var saveLua = `
local o = redis.call('HGET', KEYS[1], 'o')
if o then
  local t, g = ` + ownerMatch + `
  if t ~= ARGV[4] then return 0 end
  if g ~= '' and tonumber(g) > tonumber(ARGV[5]) then return 2 end
end
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

// Delete: KEYS[1] record; ARGV caller tag. Only the owner (any of its
// generations) deletes.
var deleteLua = `
local o = redis.call('HGET', KEYS[1], 'o')
if o then
  local t = ` + ownerMatch + `
  if t == ARGV[1] then return redis.call('DEL', KEYS[1]) end
end
return 0`

// Revalidate: KEYS[1] record; ARGV new owner, caller tag, caller
// generation. 1: the record is this node's (now under the new owner
// string); 0: another node took it (or it was released); 2: no record.
var revalidateLua = `
local o = redis.call('HGET', KEYS[1], 'o')
if not o then return 2 end
local t, g = ` + ownerMatch + `
if t ~= ARGV[2] then return 0 end
if g == '' or tonumber(g) < tonumber(ARGV[3]) then redis.call('HSET', KEYS[1], 'o', ARGV[1]) end
return 1`

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
		reval: redis.NewScript(revalidateLua),
	}
}

// UseLease makes the store write under l's generation and refuse writes
// (broker.ErrFenced) while l is not held. Call it before the store is used.
func (s *SessionStore) UseLease(l *Lease) { s.lease = l }

// owner returns the owner string this node writes now and its generation,
// or broker.ErrFenced when its lease is not held.
func (s *SessionStore) owner() (string, int64, error) {
	if s.lease == nil {
		return s.tag, 0, nil
	}
	gen, held := s.lease.current()
	if !held {
		return "", gen, broker.ErrFenced
	}
	return ownerOf(s.tag, gen), gen, nil
}

func (s *SessionStore) key(id string) string { return s.prefix + ":s:{" + id + "}" }

func (s *SessionStore) ttlMillis() int64 { return s.ttl.Milliseconds() }

// Save implements broker.SessionStore. Without the lease it returns
// broker.ErrFenced (nothing written).
func (s *SessionStore) Save(ctx context.Context, st *broker.SessionState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode session %s: %w", st.ID, err)
	}
	// A newer generation may be taken while a save is on its way (2):
	// the next attempt writes under it.
	for range 3 {
		owner, gen, err := s.owner()
		if err != nil {
			return fmt.Errorf("save session %s: %w", st.ID, err)
		}
		n, err := s.save.Run(ctx, s.client, []string{s.key(st.ID)}, owner, b, s.ttlMillis(), s.tag, gen).Int()
		switch {
		case err != nil:
			return fmt.Errorf("save session %s: %w", st.ID, err)
		case n == 0:
			return broker.ErrOwnershipLost
		case n == 1:
			return nil
		}
	}
	return fmt.Errorf("save session %s: %w", st.ID, broker.ErrFenced)
}

// Self implements broker.HandOverStore: the owner string this node
// writes now ("<tag>.<gen>"), or broker.ErrFenced without its lease.
func (s *SessionStore) Self() (string, error) {
	owner, _, err := s.owner()
	return owner, err
}

// HandOver implements broker.HandOverStore: st, this node's session, is
// written as owned by to (another node's owner string) in one
// compare-and-set. It is the save script with another owner to write, so
// it is fenced the same way: it succeeds only while the record names this
// node (at a generation not newer than its lease's) and this node holds
// its lease; another owner gives broker.ErrOwnershipLost.
func (s *SessionStore) HandOver(ctx context.Context, st *broker.SessionState, to string) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode session %s: %w", st.ID, err)
	}
	for range 3 {
		_, gen, err := s.owner()
		if err != nil {
			return fmt.Errorf("hand over session %s: %w", st.ID, err)
		}
		n, err := s.save.Run(ctx, s.client, []string{s.key(st.ID)}, to, b, s.ttlMillis(), s.tag, gen).Int()
		switch {
		case err != nil:
			return fmt.Errorf("hand over session %s: %w", st.ID, err)
		case n == 0:
			return broker.ErrOwnershipLost
		case n == 1:
			return nil
		}
	}
	return fmt.Errorf("hand over session %s: %w", st.ID, broker.ErrFenced)
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
	gen := int64(0)
	if s.lease != nil {
		gen, _ = s.lease.current()
	}
	pipe := s.client.Pipeline()
	for _, st := range states {
		b, err := json.Marshal(st)
		if err != nil {
			return fmt.Errorf("encode session %s: %w", st.ID, err)
		}
		// A 0 result means another node already took the session: fine.
		s.save.EvalSha(ctx, pipe, []string{s.key(st.ID)}, "", b, s.ttlMillis(), s.tag, gen)
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

// Owner implements broker.SessionStore: the owner string of id's record
// ("" when released), or broker.ErrNoRecord.
func (s *SessionStore) Owner(ctx context.Context, id string) (string, error) {
	o, err := s.client.HGet(ctx, s.key(id), "o").Result()
	if errors.Is(err, redis.Nil) {
		return "", broker.ErrNoRecord
	}
	if err != nil {
		return "", fmt.Errorf("session owner %s: %w", id, err)
	}
	return o, nil
}

// Claim implements broker.SessionStore: it takes id over for this node if
// its owner is still expected (one compare-and-set). It returns the state
// and this node's owner string, or broker.ErrClaimLost with the current
// owner, broker.ErrNoRecord, or broker.ErrFenced while this node's lease
// is not held.
func (s *SessionStore) Claim(ctx context.Context, id, expected string) (*broker.SessionState, string, error) {
	owner, _, err := s.owner()
	if err != nil {
		return nil, "", fmt.Errorf("claim session %s: %w", id, err)
	}
	res, err := s.claim.Run(ctx, s.client, []string{s.key(id)}, expected, owner, s.ttlMillis()).Slice()
	if errors.Is(err, redis.Nil) {
		return nil, "", broker.ErrNoRecord
	}
	if err != nil {
		return nil, "", fmt.Errorf("claim session %s: %w", id, err)
	}
	if len(res) != 2 {
		return nil, "", fmt.Errorf("claim session %s: unexpected reply %v", id, res)
	}
	if ok, _ := res[0].(int64); ok != 1 {
		cur, _ := res[1].(string)
		return nil, cur, broker.ErrClaimLost
	}
	raw, _ := res[1].(string)
	var st broker.SessionState
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return nil, "", fmt.Errorf("decode session %s: %w", id, err)
	}
	return &st, owner, nil
}
