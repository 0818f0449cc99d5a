-- Publish one prediction exactly once (docs/architecture.md, decision 4), acknowledging the event it
-- answers and updating the live score in the same atomic step (one round trip per candle).
-- KEYS[1] prediction stream, KEYS[2] latest key, KEYS[3] event stream, KEYS[4] live-score hash,
-- KEYS[5] calibration key
-- ARGV[1] channel, ARGV[2] entry id '<as_of>-0', ARGV[3] message JSON, ARGV[4] stream MAXLEN,
-- ARGV[5] consumer group, ARGV[6] calibration JSON ('' for none), ARGV[7] number of event ids
-- n, ARGV[8..7+n] event ids to XACK, then ARGV[8+n] the live-score hash's field/value pairs as
-- one JSON array of strings (absent when there is nothing new to score: one argument instead
-- of a pair per figure, since encoding the arguments was the larger part of a publish's cost). The calibration state is written only with a message that
-- is published, so the state and the published interval it describes never part.
-- XADD with the explicit id fails for a repeat or an older as_of, so a redelivered event never
-- yields a second message; its event is acknowledged all the same.
-- Returns 1 when published, 0 when it was a duplicate or older.
local n = tonumber(ARGV[7])
if n > 0 then
  redis.call('XACK', KEYS[3], ARGV[5], unpack(ARGV, 8, 7 + n))
end
if #ARGV > 7 + n then
  redis.call('HSET', KEYS[4], unpack(cjson.decode(ARGV[8 + n])))
end
local ok = pcall(redis.call, 'XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], ARGV[2], 'm', ARGV[3])
if not ok then return 0 end
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[5], ARGV[6])
end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[1], ARGV[3])
return 1
