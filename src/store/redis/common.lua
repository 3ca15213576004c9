-- Shared by the scripts that add a token. Redis clock, so that every application
-- instance agrees on expiry.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Records a token and indexes it under its user, first dropping the user's expired
-- entries and evicting the tokens closest to expiry beyond the limit. The index's own
-- TTL follows its longest-lived token so that an idle user leaves nothing behind.
local function add_token(token_key, index_key, token_prefix, member, ttl, max, device)
  local now = now_ms()
  redis.call('ZREMRANGEBYSCORE', index_key, '-inf', now)
  local excess = redis.call('ZCARD', index_key) - max + 1
  if excess > 0 then
    local evicted = redis.call('ZPOPMIN', index_key, excess)
    for i = 1, #evicted, 2 do
      redis.call('DEL', token_prefix .. evicted[i])
    end
  end
  local expires = now + ttl
  redis.call('SET', token_key, string.format('%d|%s', now, device), 'PX', ttl)
  redis.call('ZADD', index_key, expires, member)
  local last = redis.call('ZRANGE', index_key, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', index_key, last[2])
  return { now, expires }
end
