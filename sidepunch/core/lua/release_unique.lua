-- Release a unique job's lock, only if that job holds it (compare-and-delete).
-- KEYS[1] = sidepunch:unique:<digest>; ARGV[1] = the holder's value (JSON [jid, class]).
-- Returns 1 if it was deleted, 0 if it is gone, expired, held by another job, or not a string.
if redis.call("TYPE", KEYS[1])["ok"] ~= "string" then
  return 0
end
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
