-- Idempotent batch upsert of closed candles of one series.
-- KEYS[1] meta hash, KEYS[2] bucket index zset, KEYS[3] event stream, KEYS[4..] bucket hashes
-- ARGV[1] emit events (0/1), ARGV[2] event stream MAXLEN, ARGV[3] arrival ms, ARGV[4] bucket size,
-- ARGV[5] the candles: fixed-size records of <uint16 bucket slot (1-based into KEYS[4..]),
-- uint16 field in bucket, 48-byte packed candle>. One binary argument instead of five per candle
-- keeps the client's encoding cost out of the ingest path. ARGV[6..] the bucket numbers of KEYS[4..].
-- Same candle twice changes nothing; a changed candle replaces the old one (and, like a new
-- one, yields a closed-candle event). A copy without a trade count (-1: REST through ccxt drops
-- it) of a stored candle with the same prices and volume is the same candle, not a revision.
-- Returns {new, replaced, unchanged, count, last_index}.
local meta, index, events = KEYS[1], KEYS[2], KEYS[3]
local emit, maxlen, arrived, bsize = ARGV[1] == '1', ARGV[2], ARGV[3], tonumber(ARGV[4])
local blob = ARGV[5]
local new, replaced, unchanged = 0, 0, 0
local last = tonumber(redis.call('HGET', meta, 'last') or '-1')
local bucket_of = {}
for s = 6, #ARGV do bucket_of[s - 5] = tonumber(ARGV[s]) end
local seen_bucket = {}
local NO_TRADES = struct.pack('<i8', -1)
for off = 1, #blob, 52 do
  local slot, field = struct.unpack('<HH', blob, off)
  local packed = string.sub(blob, off + 4, off + 51)
  local bkey = KEYS[3 + slot]
  local old = redis.call('HGET', bkey, field)
  if old == packed or (old and string.sub(packed, 41) == NO_TRADES
      and string.sub(old, 1, 40) == string.sub(packed, 1, 40)) then
    unchanged = unchanged + 1
  else
    redis.call('HSET', bkey, field, packed)
    local bno = bucket_of[slot]
    if old then
      replaced = replaced + 1
    else
      new = new + 1
      if not seen_bucket[bno] then
        redis.call('ZADD', index, bno, bno)
        seen_bucket[bno] = true
      end
    end
    local idx = bno * bsize + field
    if idx > last then last = idx end
    if emit then
      redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*',
        'i', idx, 'a', arrived, 'c', packed, 'r', old and '1' or '0')
    end
  end
end
local count = redis.call('HINCRBY', meta, 'count', new)
if last >= 0 then redis.call('HSET', meta, 'last', last) end
return {new, replaced, unchanged, count, last}
