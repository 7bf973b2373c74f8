-- Reliable fetch: acknowledge finished jobs, then move the next job(s) into this thread's working list.
-- KEYS[1..n]   working lists of the n jobs to acknowledge (n = ARGV[1])
-- KEYS[n+2k-1], KEYS[n+2k]  queue:<q> and this thread's working list for <q>, in the order to try
-- ARGV[1] n, ARGV[2] most jobs to take at once, ARGV[3] share: take at most LLEN/share, so a deep queue
-- is shared out among the threads instead of hoarded; ARGV[4..] the n jobs to acknowledge.
-- A job whose worker died under it (it carries interrupted_count) is never taken in a batch: if it is a
-- poison pill, the jobs around it must not be counted as interrupted with it again.
-- A queue key of another type than list is skipped. If Redis refuses the move (out of memory...), the
-- acknowledgements still stand and the refusal comes back as {0, error}, not as a script error halfway through.
-- Returns {index of the queue (1-based), {job, ...}}, {0, error text}, or nil when every queue is empty.
local acks, most, share = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local marker = '"interrupted_count"'
for i = 1, acks do
  redis.call("LREM", KEYS[i], 1, ARGV[3 + i])
end
local function wrongtype(reply)
  return string.find(reply.err, "WRONGTYPE", 1, true) ~= nil
end
for i = acks + 1, #KEYS, 2 do
  local want = 1
  if most > 1 then
    local length = redis.pcall("LLEN", KEYS[i])
    if type(length) == "table" then length = 0 end  -- not a list: nothing to take from it
    want = math.max(1, math.min(most, math.floor(length / share)))
  end
  local jobs = {}
  for k = 1, want do
    local job = redis.pcall("LMOVE", KEYS[i], KEYS[i + 1], "RIGHT", "LEFT")
    if type(job) == "table" then
      if #jobs > 0 or wrongtype(job) then break end
      return {0, job.err}
    end
    if not job then break end
    local interrupted = string.find(job, marker, 1, true)
    if interrupted and k > 1 then
      redis.call("LMOVE", KEYS[i + 1], KEYS[i], "LEFT", "RIGHT")  -- put it back where it was
      break
    end
    jobs[#jobs + 1] = job
    if interrupted then break end
  end
  if #jobs > 0 then
    return {(i - acks + 1) / 2, jobs}
  end
end
return nil
