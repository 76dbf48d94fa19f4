-- Drop outbox entries up to a sequence number, if the caller still owns the partition.
-- KEYS: 1 meta, 2 outbox.  ARGV: 1 epoch, 2 seq.  (prelude.lua comes first.)
if not owns(KEYS[1], ARGV[1]) then return 0 end
drop_acked(KEYS[2], tonumber(ARGV[2]))
return 1
