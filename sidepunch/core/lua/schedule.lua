-- Move one due job from a sorted set (schedule or retry) to its queue, or into the dead set, only if it is
-- still in the set: a job is neither dropped nor doubled when a process dies mid-move or two pollers race.
-- KEYS[1] = the sorted set, KEYS[2] = queue:<q>, KEYS[3] = queues;
-- the poller adds KEYS[4] = dead, KEYS[5] = sidepunch:dead-reasons (then dead.lua is loaded as dead()).
-- ARGV[1] = the member as stored, ARGV[2] = the payload to enqueue, ARGV[3] = the queue name;
-- the poller adds ARGV[4] = now, ARGV[5] = dead cutoff score, ARGV[6] = dead size limit, ARGV[7] = why the
-- member cannot be enqueued, or "" if it can. A member that cannot goes to the dead set byte for byte.
-- The payload is built by the client in Python: re-encoding JSON in Lua would change its bytes.
-- Writes come before the ZREM, and a queue key that is not a list is never written to, so an error leaves
-- the member where it was. Returns 0 (already gone), 1 (enqueued), 2 (killed for ARGV[7]) or 3 (killed: its
-- queue key holds another type); without the dead keys, that last case is an error and the member stays.
local zset, queue, queues = KEYS[1], KEYS[2], KEYS[3]
local member, reason = ARGV[1], ARGV[7] or ""
if not redis.call("ZSCORE", zset, member) then
  return 0
end
local status = 2
if reason == "" then
  local kind = redis.call("TYPE", queue)["ok"]
  if kind == "list" or kind == "none" then
    redis.call("LPUSH", queue, ARGV[2])
    local set_kind = redis.call("TYPE", queues)["ok"]
    if set_kind == "set" or set_kind == "none" then
      redis.call("SADD", queues, ARGV[3])
    end
    redis.call("ZREM", zset, member)
    return 1
  end
  reason = "its queue key " .. queue .. " holds a " .. kind .. ", not a list of jobs"
  status = 3
  if #KEYS < 5 then
    return redis.error_reply("WRONGTYPE " .. reason)
  end
end
dead({KEYS[4], KEYS[5]}, {member, ARGV[4], ARGV[5], ARGV[6], reason})
redis.call("ZREM", zset, member)
return status
