-- Shared by every script. A user's tokens are the fields of one hash: the field is the
-- token's SHA-256 (32 raw bytes), the value `<expires ms>|<issued ms>|<device>`.

-- Redis's clock, so that every application instance agrees on expiry.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function expires_of(value)
  return tonumber(string.match(value, '^(%d+)|'))
end

-- Drops the user's expired tokens and returns the live ones as {field, expires, value},
-- soonest to expire first.
local function live_tokens(key, now)
  local all = redis.call('HGETALL', key)
  local live = {}
  for i = 1, #all, 2 do
    local expires = expires_of(all[i + 1])
    if expires and expires > now then
      live[#live + 1] = { all[i], expires, all[i + 1] }
    else
      redis.call('HDEL', key, all[i])
    end
  end
  table.sort(live, function(a, b) return a[2] < b[2] end)
  return live
end

-- Records a token, first evicting the soonest to expire beyond the limit. The hash lives
-- as long as its longest-lived token, so an idle user leaves nothing behind.
local function add_token(key, field, ttl, max, device)
  local now = now_ms()
  local live = live_tokens(key, now)
  local evict = math.max(#live - max + 1, 0)
  for i = 1, evict do
    redis.call('HDEL', key, live[i][1])
  end
  local expires = now + ttl
  redis.call('HSET', key, field, string.format('%d|%d|%s', expires, now, device))
  local longest = expires
  if #live > evict and live[#live][2] > longest then
    longest = live[#live][2]
  end
  redis.call('PEXPIREAT', key, longest)
  return { now, expires }
end
