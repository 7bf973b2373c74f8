-- Add one job to the dead set and trim the set by age and size, as Sidekiq's DeadSet#kill does.
-- KEYS[1] = dead, KEYS[2] = sidepunch:dead-reasons
-- ARGV[1] = the member (exact bytes), ARGV[2] = now (its score), ARGV[3] = cutoff score (older entries go),
-- ARGV[4] = size limit, ARGV[5] = why it is dead, or "" when its payload carries error fields of its own.
-- The reasons of trimmed members are deleted with them, so the hash never outgrows the set. Reasons are
-- information beside the job: a reasons key of another type is left alone rather than fail the job's move.
local dead, reasons = KEYS[1], KEYS[2]
local member, now, cutoff, limit, reason = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
redis.call("ZADD", dead, now, member)
local kind = redis.call("TYPE", reasons)["ok"]
if reason ~= "" and (kind == "hash" or kind == "none") then
  redis.call("HSET", reasons, member, reason)
  kind = "hash"
end
if kind == "hash" then
  for _, old in ipairs(redis.call("ZRANGEBYSCORE", dead, "-inf", cutoff)) do
    redis.call("HDEL", reasons, old)
  end
  local excess = redis.call("ZCARD", dead) - limit
  if excess > 0 then
    for _, old in ipairs(redis.call("ZRANGE", dead, 0, excess - 1)) do
      redis.call("HDEL", reasons, old)
    end
  end
end
redis.call("ZREMRANGEBYSCORE", dead, "-inf", cutoff)
redis.call("ZREMRANGEBYRANK", dead, 0, -(limit + 1))
return 1
