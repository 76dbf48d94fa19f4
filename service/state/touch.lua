-- Keep an owned partition's state alive: refresh the TTL of every key, if the caller
-- still owns it. Replies 'ok', 'lost' or 'fenced' (prelude.lua: ownership).
-- KEYS: 1 meta, 2 idx, 3 state, 4 outbox, 5 bykey, 6 seen.  ARGV: 1 epoch, 2 claims, 3 ttl s.
local who = ownership(KEYS[1], ARGV[1], ARGV[2])
if who == 'ok' then
  for _, k in ipairs(KEYS) do redis.call('EXPIRE', k, tonumber(ARGV[3])) end
end
return who
