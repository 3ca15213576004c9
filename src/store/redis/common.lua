-- Shared by every script. A user's tokens are the fields of one hash: the field is the
-- token's SHA-256 (32 raw bytes), the value `<expires ms>|<issued ms>|<device>`.
--
-- Every time comes from the application server's clock, passed in as `now`: expiry is
-- decided on one clock whichever operation looks at it (see `TokenStore`'s "Time").
-- The hash's own expiry is set relative to `now`, so Redis's clock never enters.

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
local function add_token(key, field, now, expires, max, device)
  local live = live_tokens(key, now)
  local evict = math.max(#live - max + 1, 0)
  for i = 1, evict do
    redis.call('HDEL', key, live[i][1])
  end
  redis.call('HSET', key, field, string.format('%d|%d|%s', expires, now, device))
  local longest = expires
  if #live > evict and live[#live][2] > longest then
    longest = live[#live][2]
  end
  redis.call('PEXPIRE', key, math.max(longest - now, 1))
end
