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

-- Numeric components: plain digits are exact integers (of any size: Lua numbers are
-- doubles, so big ones are added and compared as decimal text); anything else
-- (with '.', 'e', inf, nan) is a float, and a float result always keeps a float mark.
local function is_int(s) return string.find(s, '^%-?%d+$') ~= nil end
local function fmt_float(n)
  local s = fmt(n)
  if is_int(s) then s = s .. '.0' end
  return s
end

local function digits(s)
  local neg = string.sub(s, 1, 1) == '-'
  local d = string.gsub(neg and string.sub(s, 2) or s, '^0+', '')
  if d == '' then return false, '0' end
  return neg, d
end

-- Compare two digit strings without sign or leading zeros.
local function cmp_abs(a, b)
  if #a ~= #b then return (#a < #b) and -1 or 1 end
  if a == b then return 0 end
  return (a < b) and -1 or 1
end

local function add_abs(a, b)
  local out, carry, i, j = {}, 0, #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local d = carry + (i > 0 and tonumber(string.sub(a, i, i)) or 0)
      + (j > 0 and tonumber(string.sub(b, j, j)) or 0)
    out[#out + 1] = d % 10
    carry = (d >= 10) and 1 or 0
    i, j = i - 1, j - 1
  end
  return string.reverse(table.concat(out))
end

-- a - b for a >= b.
local function sub_abs(a, b)
  local out, borrow, j = {}, 0, #b
  for i = #a, 1, -1 do
    local d = tonumber(string.sub(a, i, i)) - borrow - (j > 0 and tonumber(string.sub(b, j, j)) or 0)
    if d < 0 then d, borrow = d + 10, 1 else borrow = 0 end
    out[#out + 1] = d
    j = j - 1
  end
  local _, d = digits(string.reverse(table.concat(out)))
  return d
end

local function signed(neg, d) return (neg and d ~= '0') and ('-' .. d) or d end

local function int_add(x, y)
  -- Below 10^15 each, the double sum is exact.
  if #x < 16 and #y < 16 then return string.format('%.0f', tonumber(x) + tonumber(y)) end
  local xn, xd = digits(x)
  local yn, yd = digits(y)
  if xn == yn then return signed(xn, add_abs(xd, yd)) end
  local c = cmp_abs(xd, yd)
  if c == 0 then return '0' end
  if c > 0 then return signed(xn, sub_abs(xd, yd)) end
  return signed(yn, sub_abs(yd, xd))
end

local function int_cmp(x, y)
  local xn, xd = digits(x)
  local yn, yd = digits(y)
  if xn ~= yn then return xn and -1 or 1 end
  local c = cmp_abs(xd, yd)
  return xn and -c or c
end

local function num_add(x, y)
  if is_int(x) and is_int(y) then return int_add(x, y) end
  return fmt_float(tonumber(x) + tonumber(y))
end

-- x <= y, numerically.
local function num_le(x, y)
  if is_int(x) and is_int(y) then return int_cmp(x, y) <= 0 end
  return tonumber(x) <= tonumber(y)
end

-- The merge rule of two component lists (processing/windows.py: merge).
local function merge(ops, a, b)
  local out = {}
  for i, op in ipairs(ops) do
    local x, y = a[i], b[i]
    if op == 'add' then out[i] = num_add(x, y)
    elseif op == 'min' then out[i] = num_le(x, y) and x or y
    elseif op == 'max' then out[i] = num_le(y, x) and x or y
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

-- A time in ms as 16 characters that sort as text in time order (codec.ordered_time).
local function ord(n)
  if n >= 0 then return string.format('%016d', n) end
  return '-' .. string.format('%015d', n + 1e15)
end

-- The `bykey` set holds each record key's windows (sessions, sliding buckets) as
-- "<len>:<key>|<start:ord>|<wid>", all at score 0: one key's windows are one lex range,
-- ordered by start (codec.by_key_member).
local function key_head(key) return #key .. ':' .. key .. '|' end
local function by_key_member(key, s, wid) return key_head(key) .. ord(s) .. '|' .. wid end
local function by_key_wid(key, member) return string.sub(member, #key_head(key) + 18) end

-- The windows of `key` starting in [lo, hi) (window ids, by start).
local function key_windows(bykey, key, lo, hi)
  local head = key_head(key)
  local low = lo and ('[' .. head .. ord(lo)) or ('[' .. head)
  local out = {}
  for _, m in ipairs(redis.call('ZRANGEBYLEX', bykey, low, '(' .. head .. ord(hi))) do
    out[#out + 1] = by_key_wid(key, m)
  end
  return out
end

-- Outbox fields: "<seq>:o" (window rows), "<seq>:l" (DLQ entries), "<seq>:r" (outputs).
local function outbox_field(seq, part) return seq .. ':' .. part end

-- The caller still holds the partition's fencing epoch.
local function owns(meta, epoch) return redis.call('HGET', meta, 'epoch') == epoch end

-- Whose the partition is, for a caller holding `epoch`, issued as claim number `claims`:
-- 'ok' (the caller's), 'lost' (the state, or the caller's claim, is gone: Redis was
-- emptied, evicted or expired it, or failed over before the claim reached a replica) or
-- 'fenced' (a newer claim took it). A claim number issued again after a loss carries
-- another token, so it is not the caller's epoch: fenced.
local function ownership(meta, epoch, claims)
  local e = redis.call('HGET', meta, 'epoch')
  if e == epoch then return 'ok' end
  if not e then return 'lost' end
  if tonumber(redis.call('HGET', meta, 'claims') or '0') < tonumber(claims) then return 'lost' end
  return 'fenced'
end

-- Acknowledged outbox entries are delivered: drop every entry up to `ack`.
local function drop_acked(outbox, ack)
  for _, field in ipairs(redis.call('HKEYS', outbox)) do
    local seq = tonumber(string.match(field, '^(%d+)'))
    if seq and seq <= ack then redis.call('HDEL', outbox, field) end
  end
end
