-- One push of jobs, some of them unique, in one atomic step: a unique job is written only if it takes its lock.
-- KEYS[1] = queues; then for job i (from 1): KEYS[2i] = where it goes (queue:<q>, or schedule when it has a
-- score), KEYS[2i + 1] = its lock key (repeats KEYS[2i] when it has no lock).
-- ARGV, 5 per job from ARGV[5i - 4]: queue name, score ("" = due now), payload, lock value ("" = no lock),
-- lock TTL in ms. Jobs are written in the order given, so a queue's list ends as one LPUSH of them would.
-- Returns one integer per job: 1 written (now, or by an earlier attempt of the same push: its own jid holds the
-- lock, and lock and job are only ever written together), 0 refused (another job holds the lock; a key of
-- another type under the lock's name counts as held).
local queues = KEYS[1]
local written = {}
for i = 1, (#KEYS - 1) / 2 do
  local target, lock = KEYS[2 * i], KEYS[2 * i + 1]
  local base = 5 * (i - 1)
  local name, score, payload, holder, ttl = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4],
    ARGV[base + 5]
  local free = holder == "" or redis.call("SET", lock, holder, "NX", "PX", ttl)
  if not free and redis.call("TYPE", lock)["ok"] == "string" and redis.call("GET", lock) == holder then
    written[i] = 1  -- this very job holds it: a retry of a push whose first attempt landed; written once
  elseif free then
    if score == "" then
      redis.call("SADD", queues, name)
      redis.call("LPUSH", target, payload)
    else
      redis.call("ZADD", target, score, payload)
    end
    written[i] = 1
  else
    written[i] = 0
  end
end
return written
