-- KEYS: token key, user index. ARGV: token id.
local live = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return live
