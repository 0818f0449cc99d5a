-- Publish one prediction exactly once (DESIGN.md decision 4).
-- KEYS[1] prediction stream, KEYS[2] latest key; ARGV[1] channel, ARGV[2] entry id '<as_of>-0',
-- ARGV[3] message JSON, ARGV[4] stream MAXLEN.
-- XADD with the explicit id fails for a repeat or an older as_of, so a redelivered event never
-- yields a second message. Returns 1 when published, 0 when it was a duplicate or stale.
local ok = pcall(redis.call, 'XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], ARGV[2], 'm', ARGV[3])
if not ok then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[1], ARGV[3])
return 1
