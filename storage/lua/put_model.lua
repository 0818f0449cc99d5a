-- Store an immutable model version. KEYS[1] version hash, KEYS[2] versions zset.
-- ARGV[1] artifact bytes, ARGV[2] sha256 hex, ARGV[3] meta JSON, ARGV[4] created_at ms,
-- ARGV[5] sequence number, ARGV[6] version id, ARGV[7] the numpy artifact (may be empty).
-- One HSET writes every field, so a version is complete or absent: never half-written.
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('version exists') end
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], 'artifact', ARGV[1], 'sha256', ARGV[2], 'meta', ARGV[3],
    'created_at', ARGV[4], 'npz', ARGV[7])
else
  redis.call('HSET', KEYS[1], 'artifact', ARGV[1], 'sha256', ARGV[2], 'meta', ARGV[3],
    'created_at', ARGV[4])
end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
return 1
