-- Apply one batch of one input partition to its window state, atomically.
-- KEYS: 1 meta (hash), 2 idx (zset: window id -> end), 3 state (hash: window id -> comps),
--       4 outbox (hash: seq -> window rows / DLQ entries / outputs), 5 bykey (zset: each
--       record key's windows by start, sessions and sliding buckets), 6 seen (zset: dedupe
--       id -> expiry time). No other key is touched.
-- ARGV: 1 epoch, 2 its claim number, 3 first offset (-1: no records), 4 last offset,
--       5 max event time, 6 watermark candidate, 7 kind, 8 size ms (sliding), 9 emit
--       mode, 10 ops, 11 ttl s, 12 outbox seq acknowledged, 13 DLQ entries blob,
--       14 the outbox seq the caller last saw (-1: not checked), 15 dedupe ids kept
--       (JSON [id, expiry, ...], '' none), 16 forget ids expiring at or below this time,
--       17 outputs blob (a stateless pipeline's), 18 group_by's source marks
--       (`<input partition>=<position>,...`, '' none), 19.. deltas: key, start, end, comps
-- Replies {'ok', seq, wm, applied, rows, open windows}, {'stale', applied, seq},
--         {'fenced', epoch} or {'lost'} (prelude.lua: ownership).
-- A call is `stale` when it (or a later one) already ran: its outbox sequence moved past
-- what the caller saw, or its first offset is applied. That is how a replayed call whose
-- reply was lost is told apart, a batch's and an idle tick's alike (a tick has no offset).
-- The sequence BEHIND what the caller saw means Redis forgot writes it acknowledged
-- (a failover to a replica that missed them): `lost`.
-- (prelude.lua comes first: layout helpers, the merge rule, the ack loop.)
local meta, idx, state, outbox, bykey, seen_ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]

local who = ownership(meta, ARGV[1], ARGV[2])
if who == 'lost' then return {'lost'} end
if who ~= 'ok' then
  return {'fenced', tostring(redis.call('HGET', meta, 'epoch'))}
end
local applied = tonumber(redis.call('HGET', meta, 'applied') or '-1')
local seen = tonumber(redis.call('HGET', meta, 'seq') or '0')
local saw = tonumber(ARGV[14])
if saw >= 0 and seen < saw then return {'lost'} end
local first = tonumber(ARGV[3])
if (saw >= 0 and seen > saw) or (first >= 0 and first <= applied) then
  return {'stale', tostring(applied), tostring(seen)}
end

local kind, size, emit = ARGV[7], tonumber(ARGV[8]), ARGV[9]
local ttl = tonumber(ARGV[11])
local ops = {}
for op in string.gmatch(ARGV[10], '[^,]+') do ops[#ops + 1] = op end

-- 0. Acknowledged outbox entries are delivered: drop them.
local ack = tonumber(ARGV[12])
if ack >= 0 then drop_acked(outbox, ack) end

-- 1. Merge the deltas.
local touched, touched_keys, order = {}, {}, {}
local i = 19
while i <= #ARGV do
  local key, s, e = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local comps = split(ARGV[i + 3])
  i = i + 4
  if kind == 'session' then
    local changed = true
    while changed do
      changed = false
      for _, wid in ipairs(key_windows(bykey, key, nil, e)) do
        local ws, we = parse_wid(wid)
        if we > s then
          comps = merge(ops, comps, split(redis.call('HGET', state, wid)))
          if ws < s then s = ws end
          if we > e then e = we end
          redis.call('HDEL', state, wid)
          redis.call('ZREM', idx, wid)
          redis.call('ZREM', bykey, by_key_member(key, ws, wid))
          changed = true
        end
      end
    end
  end
  local wid = wid_of(s, e, key)
  local old = redis.call('HGET', state, wid)
  if old then comps = merge(ops, split(old), comps) end
  redis.call('HSET', state, wid, table.concat(comps, SEP))
  if kind == 'count_tumbling' or kind == 'count_hopping' then
    -- A count window closes (step 4) in the apply that fills it, never by time: its last
    -- component counts its records, `size` is the records per window (codec.StateLayout;
    -- processing/count_windows.py).
    redis.call('ZADD', idx, tonumber(comps[#comps]) >= size and '-inf' or '+inf', wid)
  else
    redis.call('ZADD', idx, e, wid)
  end
  if kind == 'session' or kind == 'sliding' then
    redis.call('ZADD', bykey, 0, by_key_member(key, s, wid))
  end
  if kind == 'sliding' then redis.call('ZADD', idx, s + size, 'x|' .. wid) end
  if not touched[wid] then touched[wid] = true; order[#order + 1] = wid end
  touched_keys[key] = true
end

-- 2. Advance the watermark.
local max_ts = tonumber(redis.call('HGET', meta, 'max_ts') or ARGV[5])
if tonumber(ARGV[5]) > max_ts then max_ts = tonumber(ARGV[5]) end
local wm = tonumber(redis.call('HGET', meta, 'wm') or ARGV[6])
if tonumber(ARGV[6]) > wm then wm = tonumber(ARGV[6]) end

local out = {}
local function emit_window(tag, s, e, key, comps)
  out[#out + 1] = tag; out[#out + 1] = key
  out[#out + 1] = fmt(s); out[#out + 1] = fmt(e)
  out[#out + 1] = table.concat(comps, SEP)
end

-- A sliding window [t - size + 1, t + 1) is every bucket of the key in that range.
local function sliding_window(key, t)
  local comps = nil
  for _, wid in ipairs(key_windows(bykey, key, t - size + 1, t + 1)) do
    local c = split(redis.call('HGET', state, wid))
    comps = comps and merge(ops, comps, c) or c
  end
  return comps
end

-- 3. Updates: every window the batch changed that is still there.
if emit == 'update' then
  for _, wid in ipairs(order) do
    if redis.call('HEXISTS', state, wid) == 1 then
      local s, e, key = parse_wid(wid)
      if kind == 'sliding' then
        for _, other in ipairs(key_windows(bykey, key, s, s + size)) do
          -- Every such window ends at or after this record, so it was open at batch start.
          local t = parse_wid(other)
          emit_window('u', t - size + 1, t + 1, key, sliding_window(key, t))
        end
      else
        emit_window('u', s, e, key, split(redis.call('HGET', state, wid)))
      end
    end
  end
end

-- 4. Close every window whose end the watermark reached; emit it in final mode.
-- Sliding buckets also sit in idx as "x|<id>" at the time no open window needs them.
local closed = redis.call('ZRANGEBYSCORE', idx, '-inf', wm)
local evict = {}
for _, wid in ipairs(closed) do
  if string.sub(wid, 1, 2) == 'x|' then
    evict[#evict + 1] = string.sub(wid, 3)
  else
    local s, e, key = parse_wid(wid)
    if kind == 'sliding' then
      if emit == 'final' then emit_window('c', s - size + 1, e, key, sliding_window(key, s)) end
    else
      if emit == 'final' then emit_window('c', s, e, key, split(redis.call('HGET', state, wid))) end
      redis.call('HDEL', state, wid)
      if kind == 'session' then redis.call('ZREM', bykey, by_key_member(key, s, wid)) end
    end
  end
  redis.call('ZREM', idx, wid)
end
for _, wid in ipairs(evict) do
  local s, _, key = parse_wid(wid)
  redis.call('HDEL', state, wid)
  redis.call('ZREM', bykey, by_key_member(key, s, wid))
end

-- 5. Record the applied offset, the clock, the dedupe ids kept and the outbox, atomically
-- with the state: a call that is not applied (stale, fenced, lost, or never sent) leaves
-- no id behind, so no record is ever taken for a duplicate of one that was not applied.
redis.call('ZREMRANGEBYSCORE', seen_ids, '-inf', ARGV[16])
if ARGV[15] ~= '' then
  local kept = cjson.decode(ARGV[15])
  for j = 1, #kept, 2 do redis.call('ZADD', seen_ids, kept[j + 1], kept[j]) end
end
local seq = redis.call('HINCRBY', meta, 'seq', 1)
if #out > 0 then redis.call('HSET', outbox, outbox_field(seq, 'o'), cjson.encode(out)) end
if ARGV[13] ~= '' then redis.call('HSET', outbox, outbox_field(seq, 'l'), ARGV[13]) end
if ARGV[17] ~= '' then redis.call('HSET', outbox, outbox_field(seq, 'r'), ARGV[17]) end
local fields = {'max_ts', fmt(max_ts), 'wm', fmt(wm)}
if tonumber(ARGV[4]) >= 0 then
  fields[#fields + 1] = 'applied'; fields[#fields + 1] = ARGV[4]
  applied = tonumber(ARGV[4])
end
-- group_by: the highest source position applied per input partition (only the owner
-- writes, and only higher ones: a record re-keyed twice is skipped by the next owner too).
for src, pos in string.gmatch(ARGV[18], '([^=,]+)=([^,]+)') do
  fields[#fields + 1] = 'src:' .. src; fields[#fields + 1] = pos
end
redis.call('HSET', meta, unpack(fields))
for _, k in ipairs(KEYS) do redis.call('EXPIRE', k, ttl) end
return {'ok', tostring(seq), fmt(wm), tostring(applied), out, redis.call('ZCARD', idx)}
