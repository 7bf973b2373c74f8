-- Reliable fetch: acknowledge the previous job, then move the next one into this process's working list.
-- KEYS[1]      working list holding the job to acknowledge (any key when ARGV[1] is empty)
-- KEYS[2k],KEYS[2k+1]  queue:<q> and working:queue:<q>:<identity>, in the order to try
-- ARGV[1]      the job to acknowledge, or "" for none
-- Returns {index of the queue tried (1-based), job} or nil when every queue is empty.
if ARGV[1] ~= "" then
  redis.call("LREM", KEYS[1], 1, ARGV[1])
end
for i = 2, #KEYS, 2 do
  local job = redis.call("LMOVE", KEYS[i], KEYS[i + 1], "RIGHT", "LEFT")
  if job then
    return {i / 2, job}
  end
end
return nil
