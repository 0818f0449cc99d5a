-- Idempotent batch upsert of closed candles of one series.
-- KEYS[1] meta hash, KEYS[2] bucket index zset, KEYS[3] event stream, KEYS[4..] bucket hashes
-- ARGV[1] emit events (0/1), ARGV[2] event stream MAXLEN, ARGV[3] arrival ms, ARGV[4] bucket size,
-- ARGV[5] the candles: fixed-size records of <uint16 bucket slot (1-based into KEYS[4..]),
-- uint16 field in bucket, 48-byte packed candle>. One binary argument instead of five per candle
-- keeps the client's encoding cost out of the ingest path. ARGV[6..] the bucket numbers of KEYS[4..].
-- Same candle twice changes nothing; a changed candle replaces the old one (and, like a new
-- one, yields a closed-candle event). A copy without a trade count (-1: REST through ccxt drops
-- it) of a stored candle with the same prices and volume is the same candle, not a revision.
-- Each bucket is read with one HMGET and written with one HSET, not one call per candle: a call
-- costs more than the work it does, and a backfill passes 128 candles per bucket. Records are
-- still judged in their order (a candle given twice in a batch is compared with its first copy)
-- and events appended in that order.
-- Returns {new, replaced, unchanged, count, last_index}.
local meta, index, events = KEYS[1], KEYS[2], KEYS[3]
local emit, maxlen, arrived, bsize = ARGV[1] == '1', ARGV[2], ARGV[3], tonumber(ARGV[4])
local blob = ARGV[5]
local new, replaced, unchanged = 0, 0, 0
local last = tonumber(redis.call('HGET', meta, 'last') or '-1')
local NO_TRADES = struct.pack('<i8', -1)
local nslots = #ARGV - 5
-- pass 1: the fields each bucket is asked for (once each)
local wanted, seen = {}, {}
for s = 1, nslots do wanted[s], seen[s] = {}, {} end
for off = 1, #blob, 52 do
  local slot, field = struct.unpack('<HH', blob, off)
  if not seen[slot][field] then
    seen[slot][field] = true
    local w = wanted[slot]
    w[#w + 1] = field
  end
end
-- current values: one HMGET per bucket
local cur, grew = {}, {}
for s = 1, nslots do
  local c, w = {}, wanted[s]
  if #w > 0 then
    local olds = redis.call('HMGET', KEYS[3 + s], unpack(w))
    for j = 1, #w do c[w[j]] = olds[j] end
  end
  cur[s] = c
end
-- pass 2: judge every record in order
local pending = {}
for s = 1, nslots do pending[s] = {} end
for off = 1, #blob, 52 do
  local slot, field = struct.unpack('<HH', blob, off)
  local packed = string.sub(blob, off + 4, off + 51)
  local old = cur[slot][field]
  if old == packed or (old and string.sub(packed, 41) == NO_TRADES
      and string.sub(old, 1, 40) == string.sub(packed, 1, 40)) then
    unchanged = unchanged + 1
  else
    cur[slot][field] = packed
    pending[slot][field] = packed
    local bno = tonumber(ARGV[5 + slot])
    if old then
      replaced = replaced + 1
    else
      new = new + 1
      grew[slot] = true
    end
    local idx = bno * bsize + field
    if idx > last then last = idx end
    if emit then
      redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*',
        'i', idx, 'a', arrived, 'c', packed, 'r', old and '1' or '0')
    end
  end
end
-- pass 3: one HSET per bucket written, and the index entry of a bucket with a new candle
for s = 1, nslots do
  local args = {}
  for field, packed in pairs(pending[s]) do
    args[#args + 1] = field
    args[#args + 1] = packed
  end
  if #args > 0 then
    redis.call('HSET', KEYS[3 + s], unpack(args))
    if grew[s] then
      local bno = ARGV[5 + s]
      redis.call('ZADD', index, bno, bno)
    end
  end
end
local count = redis.call('HINCRBY', meta, 'count', new)
if last >= 0 then redis.call('HSET', meta, 'last', last) end
return {new, replaced, unchanged, count, last}
