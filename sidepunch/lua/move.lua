-- Take jobs out of a working list and put them back on their queue or into the dead set, atomically per job.
-- A job is moved only if LREM finds it, so two recoveries of the same list never both move it.
-- For entry k (1-based): KEYS[2k-1] = working list, KEYS[2k] = destination (queue list or the dead zset).
-- ARGV[1] = now, ARGV[2] = dead cutoff score, ARGV[3] = dead size limit;
-- then per entry ARGV[3k+1] = "queue" or "dead", ARGV[3k+2] = job as stored, ARGV[3k+3] = job to write.
-- Returns the number of jobs moved.
local moved = 0
local now, cutoff, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
for k = 1, #KEYS / 2 do
  local mode, old, new = ARGV[3 * k + 1], ARGV[3 * k + 2], ARGV[3 * k + 3]
  if redis.call("LREM", KEYS[2 * k - 1], 1, old) > 0 then
    if mode == "queue" then
      redis.call("RPUSH", KEYS[2 * k], new)
    else
      redis.call("ZADD", KEYS[2 * k], now, new)
      redis.call("ZREMRANGEBYSCORE", KEYS[2 * k], "-inf", cutoff)
      redis.call("ZREMRANGEBYRANK", KEYS[2 * k], 0, -(limit + 1))
    end
    moved = moved + 1
  end
end
return moved
