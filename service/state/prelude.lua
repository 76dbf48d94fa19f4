-- Shared by every script: concatenated in front of each one when it is loaded, so the
-- layout, the merge rule and the ack loop are written once. The layout is documented
-- (and mirrored for Python) in service/state/codec.py.
local SEP = '\31'

-- Components: one string, joined by the unit separator.
local function split(text)
  local out = {}
  for part in string.gmatch(text .. SEP, '(.-)' .. SEP) do out[#out + 1] = part end
  return out
end

local function fmt(n) return string.format('%.17g', n) end

-- The merge rule of two component lists (processing/windows.py: merge).
local function merge(ops, a, b)
  local out = {}
  for i, op in ipairs(ops) do
    local x, y = a[i], b[i]
    if op == 'add' then out[i] = fmt(tonumber(x) + tonumber(y))
    elseif op == 'min' then out[i] = (tonumber(x) <= tonumber(y)) and x or y
    elseif op == 'max' then out[i] = (tonumber(x) >= tonumber(y)) and x or y
    elseif op == 'first' then out[i] = (x <= y) and x or y
    elseif op == 'set' then out[i] = y
    else out[i] = (x >= y) and x or y end
  end
  return out
end

-- Window ids are "start|end|key" so the key may hold any character.
local function parse_wid(wid)
  local s, e, key = string.match(wid, '^(%-?%d+)|(%-?%d+)|(.*)$')
  return tonumber(s), tonumber(e), key
end

local function wid_of(s, e, key) return string.format('%d|%d|', s, e) .. key end

-- The per-key sorted set of a record key (sessions, sliding buckets).
local function key_set(prefix, key) return prefix .. 'k:' .. key end

-- Outbox fields: "<seq>:o" (window rows), "<seq>:l" (DLQ entries).
local function outbox_field(seq, part) return seq .. ':' .. part end

-- The caller still holds the partition's fencing epoch.
local function owns(meta, epoch) return redis.call('HGET', meta, 'epoch') == epoch end

-- Acknowledged outbox entries are delivered: drop every entry up to `ack`.
local function drop_acked(outbox, ack)
  for _, field in ipairs(redis.call('HKEYS', outbox)) do
    local seq = tonumber(string.match(field, '^(%d+)'))
    if seq and seq <= ack then redis.call('HDEL', outbox, field) end
  end
end
