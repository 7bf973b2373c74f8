-- The batch state machine shared by batch_open, batch_close and batch_mark (loaded as `batch_lib(KEYS, ARGV)`,
-- it returns a table of functions). Every state change of a batch goes through `apply` and `settle` here.
-- ARGV[1] = the batch key prefix ("sidepunch:batch:"), ARGV[2] = now (epoch seconds), ARGV[3] = how long a
-- finished batch's keys live (seconds). Keys are derived from the prefix because a change climbs the chain of
-- parent batches, whose ids are only known inside the script (Sidekiq's layout is one Redis, never a cluster).
--
-- Per batch: HASH <prefix><bid> (counters and settings) and HASH <prefix><bid>:members (member -> state).
-- A member is a jid, or "b:" .. child bid for a nested batch. States: p (waiting: not finished yet),
-- f (ran and failed, not succeeded since), s (succeeded). Counters: total (members), pending (not succeeded),
-- failures (members in f), finished (ran at least once: f or s), opens (`with` blocks still open).
local prefix, now, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local B = {}

function B.meta(bid) return prefix .. bid end
function B.members(bid) return prefix .. bid .. ":members" end

local function count(key, field, by) redis.call("HINCRBY", key, field, by) end

-- One event for one member: "register", "success" or "failure". Idempotent: a job that runs twice after a crash
-- and reports twice changes nothing the second time. A member first seen here is registered on the way.
function B.apply(bid, member, event)
  local meta, members = B.meta(bid), B.members(bid)
  local state = redis.call("HGET", members, member)
  if not state then
    redis.call("HSET", members, member, "p")
    count(meta, "total", 1)
    count(meta, "pending", 1)
    state = "p"
  end
  if event == "success" and state ~= "s" then
    count(meta, "pending", -1)
    if state == "p" then count(meta, "finished", 1) else count(meta, "failures", -1) end
    redis.call("HSET", members, member, "s")
  elseif event == "failure" and state == "p" then
    count(meta, "failures", 1)
    count(meta, "finished", 1)
    redis.call("HSET", members, member, "f")
  end
end

-- The callback job of `event` ("success", "complete", "death"), if the batch has one: its template with the
-- args [bid, status], a jid that is the same for the same batch and event, and now as created_at/enqueued_at.
local function push_callback(bid, event)
  local meta = B.meta(bid)
  local template, queue, mark = unpack(redis.call("HMGET", meta, "cb_" .. event, "cbq_" .. event, "mark"))
  if not template or not queue or not mark then return end
  local f = redis.call("HMGET", meta, "total", "pending", "failures", "description", "parent", "created_at")
  local status = {bid = bid, event = event, total = tonumber(f[1]) or 0, pending = tonumber(f[2]) or 0,
                  failures = tonumber(f[3]) or 0, description = f[4] or "", parent = f[5] or "",
                  created_at = tonumber(f[6]) or 0}
  local args = cjson.encode({bid, status})
  local jid = string.sub(redis.sha1hex(bid .. "/" .. event), 1, 24)
  local payload = template:gsub('"args' .. mark .. '"', function() return args end)
  payload = payload:gsub('"jid' .. mark .. '"', function() return '"' .. jid .. '"' end)
  payload = payload:gsub('"now' .. mark .. '"', function() return now end)
  redis.call("SADD", "queues", queue)
  redis.call("LPUSH", "queue:" .. queue, payload)
end

-- A batch whose callbacks fired keeps its data `ttl` seconds more (refreshed by every later change).
local function keep_for_ttl(bid)
  if redis.call("HEXISTS", B.meta(bid), "complete_at") == 1 then
    redis.call("EXPIRE", B.meta(bid), ttl)
    redis.call("EXPIRE", B.members(bid), ttl)
  end
end

-- Fire what the batch's state now calls for, each callback once: complete (every member ran, no block open),
-- then success (every member succeeded). Returns the event its parent gets for it ("success", "failure") or nil.
local function check(bid)
  local meta = B.meta(bid)
  local f = redis.call("HMGET", meta, "opens", "total", "pending", "finished", "complete_at", "success_at")
  local opens, total, pending, finished = tonumber(f[1]) or 0, tonumber(f[2]) or 0, tonumber(f[3]) or 0,
                                          tonumber(f[4]) or 0
  if opens > 0 or finished < total then return nil end
  local up = nil
  if not f[5] then
    redis.call("HSET", meta, "complete_at", now)
    push_callback(bid, "complete")
    up = "failure"
  end
  if pending <= 0 and not f[6] then
    redis.call("HSET", meta, "success_at", now)
    push_callback(bid, "success")
    up = "success"
  end
  keep_for_ttl(bid)
  return up
end

-- Check `bid`, then each parent in turn with the event its child's change gives it ("b:" .. child as member):
-- a parent completes only after its child did, in the same script.
function B.settle(bid)
  local depth = 0
  while bid and depth < 100 do
    local up = check(bid)
    local parent = redis.call("HGET", B.meta(bid), "parent")
    if not up or not parent or parent == "" or redis.call("EXISTS", B.meta(parent)) == 0 then return end
    B.apply(parent, "b:" .. bid, up)
    bid, depth = parent, depth + 1
  end
end

-- A job of `bid` died: the death callback of the batch and of each ancestor, once each.
function B.death(bid)
  local depth = 0
  while bid and bid ~= "" and depth < 100 and redis.call("EXISTS", B.meta(bid)) == 1 do
    if redis.call("HSETNX", B.meta(bid), "death_at", now) == 1 then push_callback(bid, "death") end
    bid, depth = redis.call("HGET", B.meta(bid), "parent"), depth + 1
  end
end

return B
