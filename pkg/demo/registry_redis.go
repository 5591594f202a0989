package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// NewRedisRegistry returns a Registry kept in Redis, shared by every node
// of a cluster. Each room is one hash, bx:demo:room:{<room>}: field "v" is
// the version, field "m:<id>" a member as JSON ({id, name, cid, exp}). Every
// change is one Lua script that first removes the room's expired members,
// so a removal happens once however many nodes sweep. The set bx:demo:rooms
// names the rooms for Expire. A room's hash lives an hour past its last
// change.
func NewRedisRegistry(c redis.UniversalClient) Registry {
	return &redisRegistry{c: c,
		join:  redis.NewScript(luaPrune + luaJoin),
		leave: redis.NewScript(luaPrune + luaLeave),
		prune: redis.NewScript(luaPrune + luaExpire),
	}
}

const (
	redisRoomsKey = "bx:demo:rooms"
	redisRoomTTL  = time.Hour
)

func redisRoomKey(room string) string { return "bx:demo:room:{" + room + "}" }

type redisRegistry struct {
	c                  redis.UniversalClient
	join, leave, prune *redis.Script
}

// luaPrune is the common head of the scripts: KEYS[1] the room hash,
// ARGV[1] now (ms). It removes expired members and keeps them in removed;
// bump sets the version to max(v+1, now); reply returns
// {flag, removed, HGETALL}.
const luaPrune = `
local key = KEYS[1]
local now = tonumber(ARGV[1])
local removed = {}
local all = redis.call('HGETALL', key)
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'm:' then
    local ok, m = pcall(cjson.decode, all[i + 1])
    if not ok or type(m) ~= 'table' or (tonumber(m.exp) or 0) < now then
      redis.call('HDEL', key, all[i])
      table.insert(removed, all[i + 1])
    end
  end
end
local function bump()
  local v = (tonumber(redis.call('HGET', key, 'v') or '0') or 0) + 1
  if v < now then v = now end
  redis.call('HSET', key, 'v', string.format('%.0f', v))
  redis.call('PEXPIRE', key, ARGV[2])
end
local function reply(flag)
  return {flag, removed, redis.call('HGETALL', key)}
end
`

// ARGV[3] member id, ARGV[4] member JSON, ARGV[5] name.
const luaJoin = `
local field = 'm:' .. ARGV[3]
local changed = 1
local prev = redis.call('HGET', key, field)
if prev then
  local ok, p = pcall(cjson.decode, prev)
  if ok and type(p) == 'table' and p.name == ARGV[5] then changed = 0 end
end
redis.call('HSET', key, field, ARGV[4])
if changed == 1 or #removed > 0 then bump() else redis.call('PEXPIRE', key, ARGV[2]) end
return reply(changed)
`

// ARGV[3] member id, ARGV[4] client id ("" for any).
const luaLeave = `
local field = 'm:' .. ARGV[3]
local left = 0
local cur = redis.call('HGET', key, field)
if cur then
  local ok, p = pcall(cjson.decode, cur)
  if ARGV[4] == '' or (ok and type(p) == 'table' and p.cid == ARGV[4]) then
    redis.call('HDEL', key, field)
    left = 1
  end
end
if left == 1 or #removed > 0 then bump() end
return reply(left)
`

const luaExpire = `
if #removed > 0 then bump() end
return reply(0)
`

// redisMember is a member as stored in Redis.
type redisMember struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	CID  string `json:"cid"`
	Exp  int64  `json:"exp"` // ms
}

func toRedis(m Member) redisMember {
	return redisMember{ID: m.ID, Name: m.Name, CID: m.ClientID, Exp: m.Expires.UnixMilli()}
}

func fromRedis(raw string) (Member, bool) {
	var rm redisMember
	if err := json.Unmarshal([]byte(raw), &rm); err != nil || rm.ID == "" {
		return Member{}, false
	}
	return Member{ID: rm.ID, Name: rm.Name, ClientID: rm.CID, Expires: time.UnixMilli(rm.Exp)}, true
}

func (r *redisRegistry) run(ctx context.Context, s *redis.Script, room string, now time.Time, args ...any) (Snapshot, bool, []Member, error) {
	argv := append([]any{now.UnixMilli(), redisRoomTTL.Milliseconds()}, args...)
	res, err := s.Run(ctx, r.c, []string{redisRoomKey(room)}, argv...).Slice()
	if err != nil {
		return Snapshot{}, false, nil, fmt.Errorf("demo registry: %w", err)
	}
	if len(res) != 3 {
		return Snapshot{}, false, nil, fmt.Errorf("demo registry: unexpected script reply %v", res)
	}
	flag, _ := res[0].(int64)
	var removed []Member
	rem, _ := res[1].([]any)
	for _, x := range rem {
		if s, ok := x.(string); ok {
			if m, ok := fromRedis(s); ok {
				removed = append(removed, m)
			}
		}
	}
	sortMembers(removed)
	snap := Snapshot{Room: room, Members: []Member{}}
	all, _ := res[2].([]any)
	for i := 0; i+1 < len(all); i += 2 {
		f, _ := all[i].(string)
		v, _ := all[i+1].(string)
		switch {
		case f == "v":
			snap.Version, _ = strconv.ParseInt(v, 10, 64)
		case strings.HasPrefix(f, "m:"):
			if m, ok := fromRedis(v); ok {
				snap.Members = append(snap.Members, m)
			}
		}
	}
	sortMembers(snap.Members)
	return snap, flag == 1, removed, nil
}

func (r *redisRegistry) Join(ctx context.Context, room string, m Member, now time.Time) (Snapshot, bool, []Member, error) {
	raw, err := json.Marshal(toRedis(m))
	if err != nil {
		return Snapshot{}, false, nil, err
	}
	s, changed, removed, err := r.run(ctx, r.join, room, now, m.ID, string(raw), m.Name)
	if err != nil {
		return s, false, nil, err
	}
	// After the script: a sweep that saw the room empty and dropped it
	// from the set is undone by the next join or refresh.
	if err := r.c.SAdd(ctx, redisRoomsKey, room).Err(); err != nil {
		return s, false, nil, fmt.Errorf("demo registry: %w", err)
	}
	return s, changed, removed, nil
}

func (r *redisRegistry) Leave(ctx context.Context, room, id, clientID string, now time.Time) (Snapshot, bool, []Member, error) {
	return r.run(ctx, r.leave, room, now, id, clientID)
}

func (r *redisRegistry) Expire(ctx context.Context, now time.Time) ([]Removal, error) {
	rooms, err := r.c.SMembers(ctx, redisRoomsKey).Result()
	if err != nil {
		return nil, fmt.Errorf("demo registry: %w", err)
	}
	var out []Removal
	for _, room := range rooms {
		s, _, removed, err := r.run(ctx, r.prune, room, now)
		if err != nil {
			return out, err
		}
		if len(removed) > 0 {
			out = append(out, Removal{Snapshot: s, Removed: removed})
		}
		if len(s.Members) == 0 {
			if err := r.c.SRem(ctx, redisRoomsKey, room).Err(); err != nil {
				return out, fmt.Errorf("demo registry: %w", err)
			}
		}
	}
	return out, nil
}
