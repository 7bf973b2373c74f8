-- Take jobs out of a working list and put them back on their queue or into the dead set, atomically per job.
-- Loaded with dead.lua as the local function dead(KEYS, ARGV) (scripts.py), so dead adds are trimmed, and
-- their reasons with them, exactly as everywhere else.
-- KEYS[1] = queues, KEYS[2] = dead, KEYS[3] = sidepunch:dead-reasons;
-- for entry k (1-based): KEYS[2k+2] = working list, KEYS[2k+3] = queue:<q>.
-- ARGV[1] = now, ARGV[2] = dead cutoff score, ARGV[3] = dead size limit (read only by dead entries);
-- per entry: ARGV[4k] = "queue" or "dead", ARGV[4k+1] = the job as stored, ARGV[4k+2] = the job to write,
-- ARGV[4k+3] = why it is dead, or "" when the job carries error fields of its own.
-- A job moves only if it is still in its working list, so two recoveries of one list never both move it. It is
-- written before it is removed, and a queue key that is not a list is never written to: an error (a key of
-- another type, out of memory) leaves the job where it was, never lost. A requeued job's queue goes back
-- into `queues` (an admin may have cleared the queue while the job ran), so the API lists it.
-- Returns {requeued, killed, stuck}: stuck jobs stayed because their queue key is not a list.
local queues, dead_key, reasons = KEYS[1], KEYS[2], KEYS[3]
local now, cutoff, limit = ARGV[1], ARGV[2], ARGV[3]
local requeued, killed, stuck = 0, 0, 0
local function holds(key, kind)
  local found = redis.call("TYPE", key)["ok"]
  return found == kind or found == "none"
end
for k = 1, (#KEYS - 3) / 2 do
  local working, queue = KEYS[2 * k + 2], KEYS[2 * k + 3]
  local mode, old, new, reason = ARGV[4 * k], ARGV[4 * k + 1], ARGV[4 * k + 2], ARGV[4 * k + 3]
  if redis.call("LPOS", working, old) then
    if mode ~= "queue" then
      dead({dead_key, reasons}, {new, now, cutoff, limit, reason})
      redis.call("LREM", working, 1, old)
      killed = killed + 1
    elseif holds(queue, "list") then
      redis.call("RPUSH", queue, new)
      if string.sub(queue, 1, 6) == "queue:" and holds(queues, "set") then
        redis.call("SADD", queues, string.sub(queue, 7))
      end
      redis.call("LREM", working, 1, old)
      requeued = requeued + 1
    else
      stuck = stuck + 1
    end
  end
end
return {requeued, killed, stuck}
