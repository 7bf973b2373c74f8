-- Take a slot of every limiter of one job (or one in-job acquire), all or none, on Redis's clock.
-- KEYS[1] = sidepunch:limits (the registry: name -> definition JSON), KEYS[2] = sidepunch:limits:seen (name ->
-- last use); then, per limiter i (from 0), KEYS[3+3i] = its state key, KEYS[4+3i] = its waiting set,
-- KEYS[5+3i] = its hold-time key (concurrent only).
-- ARGV[1] = the acquisition's token (unique), ARGV[2] = who waits (the jid, or the token), ARGV[3] = a
-- uniform random number in [0, 1) for the jitter, ARGV[4] = seconds after its last use a limiter leaves the
-- registry (a few idle ones are dropped per call); then per limiter i, ARGV[5+5i..9+5i] = kind ("concurrent",
-- "window", "bucket"), name, a, b, definition JSON; concurrent: a = limit, b = lease seconds; window: a = limit,
-- b = per seconds; bucket: a = rate per second, b = burst.
-- Returns {1, "", "0", 0, conflicts...} when every limiter granted a slot (all taken, `who` leaves every
-- waiting set), or {0, name, delay, waiting, conflicts...} when one refused: nothing is taken, `who` is counted
-- in that limiter's waiting set, and delay (seconds, a string) is when to come back, with jitter.
-- conflicts: names whose registered definition differed from the one given (the registry now holds ours).
-- TIME before writes needs effects replication: the default from Redis 5, asked for on older servers
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call("TIME")
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local token, who, u = ARGV[1], ARGV[2], tonumber(ARGV[3])
local n = (#KEYS - 2) / 3
local registry, seen, idle = KEYS[1], KEYS[2], tonumber(ARGV[4])
local conflicts = {}

-- a key's TTL only grows: members written under a longer TTL (another definition, a later turn) must stay
local function extend(key, ms)
  if redis.call("PTTL", key) < ms then redis.call("PEXPIRE", key, ms) end
end

local function params(i)
  local base = 5 + 5 * i
  return ARGV[base], ARGV[base + 1], tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3]), ARGV[base + 4]
end

-- the tokens a bucket holds now (refilled since its last take), full when it has no state
local function tokens_of(key, rate, burst)
  local state = redis.call("HMGET", key, "tokens", "at")
  local tokens, at = tonumber(state[1]), tonumber(state[2])
  if not tokens or not at then
    return burst
  end
  return math.min(burst, tokens + math.max(0, now - at) * rate)
end

-- 0 if the limiter has a slot now, else seconds until one frees (-1: unknown, a concurrent limiter)
local function wait_of(kind, key, a, b)
  if kind == "concurrent" then
    redis.call("ZREMRANGEBYSCORE", key, "-inf", now)
    if redis.call("ZCARD", key) < a then return 0 end
    return -1
  elseif kind == "window" then
    redis.call("ZREMRANGEBYSCORE", key, "-inf", now - b)
    if redis.call("ZCARD", key) < a then return 0 end
    local oldest = redis.call("ZRANGE", key, 0, 0, "WITHSCORES")
    return math.max(0.001, tonumber(oldest[2]) + b - now)
  end
  local tokens = tokens_of(key, a, b)
  if tokens >= 1 then return 0 end
  return math.max(0.001, (1 - tokens) / a)
end

local function take(kind, key, a, b)
  if kind == "concurrent" then
    redis.call("ZADD", key, now + b, token)
    extend(key, math.ceil(b * 1000))
  elseif kind == "window" then
    redis.call("ZADD", key, now, token)
    extend(key, math.ceil(b * 1000) + 1000)
  else
    local tokens = tokens_of(key, a, b)
    redis.call("HSET", key, "tokens", tostring(tokens - 1), "at", tostring(now))
    extend(key, math.ceil(b / a * 1000) + 1000)
  end
end

-- when a refused caller comes back: the limiter's own estimate of its turn, spread by how many wait
local function delay_of(kind, i, a, b, wait, waiting)
  if kind == "window" then
    return wait + u * b * waiting / a
  elseif kind == "bucket" then
    return wait + u * waiting / a
  end
  local hold = tonumber(redis.call("GET", KEYS[5 + 3 * i])) or 1
  local turn = math.min(b, math.max(0.05, hold * waiting / a))
  return turn * (0.5 + u)
end

-- names unused for `idle` seconds leave the registry (limiters made per tenant, per user...), ten at most per call
for _, name in ipairs(redis.call("ZRANGEBYSCORE", seen, "-inf", now - idle, "LIMIT", 0, 10)) do
  redis.call("HDEL", registry, name)
  redis.call("ZREM", seen, name)
end

for i = 0, n - 1 do
  local _, name, _, _, definition = params(i)
  redis.call("ZADD", seen, now, name)
  local current = redis.call("HGET", registry, name)
  if current ~= definition then
    redis.call("HSET", registry, name, definition)
    if current then conflicts[#conflicts + 1] = name end
  end
end

for i = 0, n - 1 do
  local kind, name, a, b = params(i)
  local wait = wait_of(kind, KEYS[3 + 3 * i], a, b)
  if wait ~= 0 then
    local waiting_key = KEYS[4 + 3 * i]
    redis.call("ZREMRANGEBYSCORE", waiting_key, "-inf", now)
    local waiting = redis.call("ZCARD", waiting_key)
    if not redis.call("ZSCORE", waiting_key, who) then waiting = waiting + 1 end
    local delay = math.min(delay_of(kind, i, a, b, wait, waiting), 1000000)  -- sidepunch.limits.MAX_SECONDS
    -- counted until a little after its turn; a refusal then counts it again
    redis.call("ZADD", waiting_key, now + delay + 60, who)
    extend(waiting_key, math.ceil((delay + 60) * 1000))
    return {0, name, tostring(delay), waiting, unpack(conflicts)}
  end
end

for i = 0, n - 1 do
  local kind, _, a, b = params(i)
  take(kind, KEYS[3 + 3 * i], a, b)
  redis.call("ZREM", KEYS[4 + 3 * i], who)
end
return {1, "", "0", 0, unpack(conflicts)}
