-- Move one due job from a sorted set (schedule or retry) to its queue, only if it is still there.
-- KEYS[1] = the sorted set, KEYS[2] = queue:<q>, KEYS[3] = queues
-- ARGV[1] = the member as stored, ARGV[2] = the payload to enqueue, ARGV[3] = the queue name
-- The payload is built by the client in Python: re-encoding JSON in Lua would change its bytes.
if redis.call("ZREM", KEYS[1], ARGV[1]) == 1 then
  redis.call("SADD", KEYS[3], ARGV[3])
  redis.call("LPUSH", KEYS[2], ARGV[2])
  return 1
end
return 0
