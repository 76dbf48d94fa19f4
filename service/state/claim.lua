-- Take ownership of one input partition's state: bump the fencing epoch and return the
-- clock, the applied offset and every outbox entry not yet acknowledged.
-- KEYS: 1 meta, 2 outbox.  ARGV: 1 ttl s.  (prelude.lua comes first.)
local meta, outbox = KEYS[1], KEYS[2]
local epoch = redis.call('HINCRBY', meta, 'epoch', 1)
redis.call('EXPIRE', meta, tonumber(ARGV[1]))
local m = redis.call('HMGET', meta, 'applied', 'max_ts', 'wm', 'seq')
return {tostring(epoch), m[1] or '-1', m[2] or '', m[3] or '', m[4] or '0',
        redis.call('HGETALL', outbox)}
