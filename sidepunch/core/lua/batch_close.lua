-- Close a `with batch:` block (or flush its jids while it is open): register the jids pushed in it, then, if
-- closing a counted block, uncount it and fire what the batch's state calls for (an empty batch completes here).
-- ARGV[1..3] as batch_lib.lua; ARGV[4] = bid, ARGV[5] = "close" (a counted block ends), "release" (a block
-- of a running job ends) or "flush" (the block stays open); ARGV[6..] = the jids.
-- Returns 0 if the batch does not exist (its data expired), else 1.
local B = batch_lib(KEYS, ARGV)
local bid, how = ARGV[4], ARGV[5]
if redis.call("EXISTS", B.meta(bid)) == 0 then return 0 end
for i = 6, #ARGV do B.apply(bid, ARGV[i], "register") end
if how == "close" then
  redis.call("HINCRBY", B.meta(bid), "opens", -1)
end
if how ~= "flush" then B.settle(bid) end
return 1
