-- Retention: drop the oldest candles of one series until at most ARGV[1] remain.
-- KEYS[1] meta hash, KEYS[2] bucket index zset, KEYS[3..] the oldest bucket hashes, oldest first.
-- ARGV[1] retention, ARGV[2..] the bucket numbers of KEYS[3..]. Returns the new count.
local meta, index, keep = KEYS[1], KEYS[2], tonumber(ARGV[1])
local count = tonumber(redis.call('HGET', meta, 'count') or '0')
for k = 3, #KEYS do
  if count <= keep then break end
  local bkey, bno = KEYS[k], ARGV[k - 1]
  local n = redis.call('HLEN', bkey)
  if count - n >= keep then
    redis.call('DEL', bkey)
    redis.call('ZREM', index, bno)
    count = count - n
  else
    local fields = redis.call('HKEYS', bkey)
    local nums = {}
    for _, f in ipairs(fields) do nums[#nums + 1] = tonumber(f) end
    table.sort(nums)
    for j = 1, count - keep do redis.call('HDEL', bkey, tostring(nums[j])) end
    count = keep
  end
end
redis.call('HSET', meta, 'count', count)
return count
