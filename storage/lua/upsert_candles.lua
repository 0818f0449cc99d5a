-- Idempotent batch upsert of closed candles of one series.
-- KEYS[1] meta hash, KEYS[2] bucket index zset, KEYS[3] event stream, KEYS[4..] bucket hashes
-- ARGV[1] emit events (0/1), ARGV[2] event stream MAXLEN, ARGV[3] arrival ms, ARGV[4] bucket size,
-- then per candle 5 values: bucket slot (1-based into KEYS[4..]), bucket number, field in
-- bucket, open time, packed candle.
-- Same candle twice changes nothing; a changed candle replaces the old one (and, like a new
-- one, yields a closed-candle event). Returns {new, replaced, unchanged, count, last_index}.
local meta, index, events = KEYS[1], KEYS[2], KEYS[3]
local emit, maxlen, arrived, bsize = ARGV[1] == '1', ARGV[2], ARGV[3], tonumber(ARGV[4])
local new, replaced, unchanged = 0, 0, 0
local last = tonumber(redis.call('HGET', meta, 'last') or '-1')
local seen_bucket = {}
for i = 5, #ARGV, 5 do
  local bkey = KEYS[3 + tonumber(ARGV[i])]
  local bno, field, packed = ARGV[i + 1], ARGV[i + 2], ARGV[i + 4]
  local old = redis.call('HGET', bkey, field)
  if old == packed then
    unchanged = unchanged + 1
  else
    redis.call('HSET', bkey, field, packed)
    if old then
      replaced = replaced + 1
    else
      new = new + 1
      if not seen_bucket[bno] then
        redis.call('ZADD', index, bno, bno)
        seen_bucket[bno] = true
      end
    end
    local idx = tonumber(bno) * bsize + tonumber(field)
    if idx > last then last = idx end
    if emit then
      redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*',
        't', ARGV[i + 3], 'a', arrived, 'c', packed, 'r', old and '1' or '0')
    end
  end
end
local count = redis.call('HINCRBY', meta, 'count', new)
if last >= 0 then redis.call('HSET', meta, 'last', last) end
return {new, replaced, unchanged, count, last}
