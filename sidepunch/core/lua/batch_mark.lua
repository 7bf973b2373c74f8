-- A job of a batch ended: "success" (it ran and returned, or expired unrun), "failure" (it raised: retry or not)
-- or "death" (it died or was discarded: a failure that also fires the death callbacks), then fire what the
-- batch's state calls for, up the chain of parents. Idempotent per jid.
-- ARGV[1..3] as batch_lib.lua; ARGV[4] = bid, ARGV[5] = jid, ARGV[6] = the event.
-- Returns 0 if the batch does not exist (never created, or its data expired), else 1.
local B = batch_lib(KEYS, ARGV)
local bid, jid, event = ARGV[4], ARGV[5], ARGV[6]
if redis.call("EXISTS", B.meta(bid)) == 0 then return 0 end
if event == "death" then
  B.apply(bid, jid, "failure")
  B.death(bid)
else
  B.apply(bid, jid, event)
end
B.settle(bid)
return 1
