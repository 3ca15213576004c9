-- KEYS: user key. ARGV: now ms, notice ms, reason. Signs the user out: each live token
-- becomes a notice `s<until>|<reason>`, kept until the notice ends or the token would
-- have expired, whichever is sooner. The hash already lives as long as its longest
-- token, so its expiry stays. Returns how many tokens were live.
local key = KEYS[1]
local now = tonumber(ARGV[1])
local notice_until = now + tonumber(ARGV[2])
local live = live_tokens(key, now)
for _, token in ipairs(live) do
  redis.call('HSET', key, token[1], string.format('s%d|%s', math.min(notice_until, token[2]),
    ARGV[3]))
end
return #live
