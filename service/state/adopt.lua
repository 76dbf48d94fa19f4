-- Go on with a partition's state as Redis has it after a loss (RILL_STATE_LOSS=reset):
-- its outbox sequence continues after the one Kafka's committed offsets name, so a new
-- owner never takes a new entry for one delivered before the loss.
-- KEYS: 1 meta.  ARGV: 1 seq, 2 ttl s.  Replies the sequence Redis had.
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if seq < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'seq', ARGV[1]) end
redis.call('HINCRBY', KEYS[1], 'losses', 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return tostring(seq)
