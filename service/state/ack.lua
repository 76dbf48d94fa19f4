-- Drop outbox entries up to a sequence number, if the caller still owns the partition.
-- KEYS: 1 meta, 2 outbox.  ARGV: 1 epoch, 2 seq.
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
local ack = tonumber(ARGV[2])
for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
  local seq = tonumber(string.match(field, '^(%d+)'))
  if seq and seq <= ack then redis.call('HDEL', KEYS[2], field) end
end
return 1
