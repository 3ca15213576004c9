-- KEYS: user index. ARGV: token key prefix.
local live = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  live = live + redis.call('DEL', ARGV[1] .. id)
end
redis.call('DEL', KEYS[1])
return live
