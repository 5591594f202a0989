-- Publish one message on a concrete Bayeux channel, atomically:
-- assign the next offset, append to the capped history stream, publish the
-- envelope to the channel's own pub/sub channel and to every wildcard
-- pattern channel that could match it.
--
-- KEYS[1] channel meta hash (fields: e = epoch, o = last offset)
-- KEYS[2] channel history stream (entry id = "<offset>-0", fields p, t)
-- ARGV[1] payload (encoded Bayeux message)
-- ARGV[2] history max length (approximate trim)
-- ARGV[3] key TTL in milliseconds
-- ARGV[4] epoch to use if the channel has none (new, or its state was lost)
-- ARGV[5] now, unix milliseconds
-- ARGV[6] the concrete channel name
-- ARGV[7] W3C traceparent of the publish, or '' (tracing off: the envelope
--         then has no such field)
-- ARGV[8..] pub/sub channels to publish the envelope to
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local off = redis.call('HINCRBY', KEYS[1], 'o', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], off .. '-0', 'p', ARGV[1], 't', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local head = epoch .. ' ' .. off .. ' ' .. ARGV[5] .. ' '
if ARGV[7] ~= '' then
  head = head .. ARGV[7] .. ' '
end
local env = head .. ARGV[6] .. '\n' .. ARGV[1]
for i = 8, #ARGV do
  redis.call('PUBLISH', ARGV[i], env)
end
return {epoch, off}
