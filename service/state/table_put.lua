-- Write a batch of table records into the table's hash, idempotently.
--
-- KEYS[1]: the table's hash: table key -> "<partition>:<offset>:" .. ("+" .. value | "-")
-- ARGV: groups of four: table key, partition, offset, "+" .. value (a value) or "-" (a
-- tombstone, kept as a marker so an older value written later cannot bring the key back).
--
-- A version replaces the stored one only when (partition, offset) is higher: within one
-- partition the higher offset is the later record, so workers reading the same table at
-- their own pace agree whatever order their writes arrive in.
-- Returns how many fields changed.
local table_key = KEYS[1]
local changed = 0
for i = 1, #ARGV, 4 do
  local field, p_text, o_text, value = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local p, o = tonumber(p_text), tonumber(o_text)
  local newer = true
  local current = redis.call('HGET', table_key, field)
  if current then
    local cp, co = string.match(current, '^(%d+):(%d+):')
    cp, co = tonumber(cp), tonumber(co)
    if cp and (p < cp or (p == cp and o <= co)) then
      newer = false
    end
  end
  if newer then
    -- The numbers are written as given: Lua would print a large offset as 1e+15.
    redis.call('HSET', table_key, field, p_text .. ':' .. o_text .. ':' .. value)
    changed = changed + 1
  end
end
return changed
