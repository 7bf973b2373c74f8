-- Give back (or renew) the concurrent slots of one acquisition.
-- KEYS: per concurrent limiter i (from 0), KEYS[1+2i] = its state key, KEYS[2+2i] = its hold-time key.
-- ARGV[1] = the token, ARGV[2] = "release" or "renew", ARGV[3] = seconds the slots were held (release);
-- ARGV[4+i] = limiter i's lease in seconds (renew).
-- release: ZREM the token and fold the hold time into the limiter's average (what a refused job's backoff
-- is estimated from); renew: push the token's expiry to now + lease, only if it still holds the slot.
-- Returns, per limiter, 1 if the token held its slot, 0 if its lease had already run out.
-- TIME before writes needs effects replication: the default from Redis 5, asked for on older servers
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call("TIME")
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local token, mode, held = ARGV[1], ARGV[2], tonumber(ARGV[3])
local found = {}
for i = 0, #KEYS / 2 - 1 do
  local key, hold_key = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  local score = redis.call("ZSCORE", key, token)
  local alive = score and tonumber(score) > now
  found[#found + 1] = alive and 1 or 0
  if mode == "release" then
    if score then redis.call("ZREM", key, token) end
    local average = tonumber(redis.call("GET", hold_key))
    average = average and (average * 0.8 + held * 0.2) or held
    redis.call("SET", hold_key, tostring(average), "EX", 86400)
  elseif alive then
    local lease = tonumber(ARGV[4 + i])
    redis.call("ZADD", key, now + lease, token)
    local ms = math.ceil(lease * 1000)
    if redis.call("PTTL", key) < ms then redis.call("PEXPIRE", key, ms) end
  end
end
return found
