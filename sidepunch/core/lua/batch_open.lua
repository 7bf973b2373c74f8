-- Open a `with batch:` block: create the batch on its first opening, count the block in `opens` (a batch never
-- completes while a block is open), and register a new nested batch in its parent.
-- KEYS[1] = sidepunch:batches (every batch by creation time); ARGV[1..3] as batch_lib.lua; ARGV[4] = bid,
-- ARGV[5] = 1 to count the block (0: a running job of the batch holds it open already), ARGV[6] = the
-- settings as a JSON object of strings (description, parent, mark,
-- cb_<event> templates, cbq_<event> queues), used only when the batch is new.
-- ARGV[7] = a random number: a new batch also checks 10 ids of KEYS[1] from that position and drops the ones
-- whose data expired, so the list stays about as long as the batches kept, whoever lists it.
-- Returns 1 if the batch was created, 0 if it existed.
local B = batch_lib(KEYS, ARGV)
local bid, counted, settings = ARGV[4], ARGV[5] == "1", ARGV[6]
local meta = B.meta(bid)
local created = 0
if redis.call("EXISTS", meta) == 0 then
  created = 1
  local fields = {"bid", bid, "created_at", ARGV[2], "total", 0, "pending", 0, "failures", 0, "finished", 0,
                  "opens", 0}
  for name, value in pairs(cjson.decode(settings)) do
    if type(value) == "string" then
      table.insert(fields, name)
      table.insert(fields, value)
    end
  end
  redis.call("HSET", meta, unpack(fields))
  local start = (tonumber(ARGV[7]) or 0) % math.max(1, redis.call("ZCARD", KEYS[1]))
  for _, old in ipairs(redis.call("ZRANGE", KEYS[1], start, start + 9)) do
    if redis.call("EXISTS", B.meta(old)) == 0 then redis.call("ZREM", KEYS[1], old) end
  end
  redis.call("ZADD", KEYS[1], ARGV[2], bid)
  local parent = redis.call("HGET", meta, "parent")
  if parent and parent ~= "" and redis.call("EXISTS", B.meta(parent)) == 1 then
    B.apply(parent, "b:" .. bid, "register")
  end
end
if counted then redis.call("HINCRBY", meta, "opens", 1) end
return created
