-- Take ownership of one input partition's state: a new fencing epoch; return the clock,
-- the applied offset, the outbox sequence and every outbox entry not yet acknowledged.
-- KEYS: 1 meta, 2 idx, 3 state, 4 outbox, 5 bykey, 6 seen (every key of the partition).
-- ARGV: 1 ttl s, 2 token (random, per claim), 3 layout (codec.layout_of),
--       4 outbox sequence Kafka's committed offsets say was reached (0: none).
-- Replies {'ok', epoch, applied, max_ts, wm, seq, HGETALL outbox, marks} (marks:
--         group_by's `src:<partition>`, position pairs of meta);
--         {'lost', seq}: Redis's state is behind Kafka's (emptied, evicted, expired, or
--                        failed over to a replica that missed writes); nothing written;
--         {'layout', recorded}: open state was written under another layout; nothing written.
-- (prelude.lua comes first.)
local meta, idx, state, outbox, bykey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ttl, layout, expect = tonumber(ARGV[1]), ARGV[3], tonumber(ARGV[4])

local seq = tonumber(redis.call('HGET', meta, 'seq') or '0')
if seq < expect then return {'lost', tostring(seq)} end

local recorded = redis.call('HGET', meta, 'layout')
if recorded and recorded ~= layout then
  -- Drained (no open window, nothing undelivered): the new layout may start afresh.
  if redis.call('HLEN', state) > 0 or redis.call('HLEN', outbox) > 0 then
    return {'layout', recorded}
  end
  redis.call('DEL', idx, bykey)
elseif not recorded and redis.call('EXISTS', meta) == 1
    and (string.find(layout, ';kind=session;', 1, true) or string.find(layout, ';kind=sliding;', 1, true)) then
  -- State of a version that kept each key's windows in a set of its own: index them
  -- in bykey, from the state hash (which holds every such window).
  for _, wid in ipairs(redis.call('HKEYS', state)) do
    local s, _, key = parse_wid(wid)
    if s then redis.call('ZADD', bykey, 0, by_key_member(key, s, wid)) end
  end
end

-- A claim number above every earlier one (also above an epoch of the earlier layout,
-- which was the claim count itself), with this claim's token: exact below 2^29 claims.
local claims = tonumber(redis.call('HGET', meta, 'claims') or redis.call('HGET', meta, 'epoch') or '0')
claims = claims + 1
local epoch = string.format('%.0f', claims * 16777216 + tonumber(ARGV[2]))
redis.call('HSET', meta, 'claims', string.format('%.0f', claims), 'epoch', epoch, 'layout', layout)
for _, k in ipairs(KEYS) do redis.call('EXPIRE', k, ttl) end
local m = redis.call('HMGET', meta, 'applied', 'max_ts', 'wm', 'seq')
local marks = {}
local all = redis.call('HGETALL', meta)
for j = 1, #all, 2 do
  if string.sub(all[j], 1, 4) == 'src:' then
    marks[#marks + 1] = all[j]; marks[#marks + 1] = all[j + 1]
  end
end
return {'ok', epoch, m[1] or '-1', m[2] or '', m[3] or '', m[4] or '0',
        redis.call('HGETALL', outbox), marks}
