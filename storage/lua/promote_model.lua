-- Atomically make a stored version current. KEYS[1] version hash, KEYS[2] current key.
-- ARGV[1] version id, ARGV[2] expected sha256 (the caller verified the bytes it trained).
local sha = redis.call('HGET', KEYS[1], 'sha256')
if not sha then return redis.error_reply('no such model version') end
if sha ~= ARGV[2] then return redis.error_reply('sha256 mismatch') end
redis.call('SET', KEYS[2], ARGV[1])
return 1
