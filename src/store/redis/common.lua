-- Shared by every script. A user's tokens are the fields of one hash: the field is the
-- token's SHA-256 (32 raw bytes), the value of a live token
-- `<expires ms>|<issued ms>|<session started ms>|<device>`.
--
-- For a short grace after a write whose answer may have been lost (`retry_grace`), two
-- kinds of tombstone share the hash. Neither is live; each is dropped once its grace
-- is over:
--   `r<until>|<successor hex>`: a token rotated out, which may rotate once more until
--     `until` (the client may never have received its successor);
--   `x<until>|<evictor hex>|<value>`: a token the device limit evicted, restored if the
--     login that evicted it is undone;
--   `u<until>|`: a token whose issue was undone, so that the issue, should its script
--     arrive late, writes nothing.
-- A third kind outlives the grace: `s<until>|<reason>`, a token the service signed out
-- (`sign_out.lua`), which validation reports with its reason until `until`.
-- A user keeps at most `TOMBSTONES_PER_DEVICE` times their device limit of them (the
-- oldest go first), so fast refreshes cannot grow a hash that every script reads.
--
-- Every time comes from the application server's clock, passed in as `now`: expiry is
-- decided on one clock whichever operation looks at it (see `TokenStore`'s "Time").
-- The hash's own expiry is set relative to `now`, so Redis's clock never enters.

local function expires_of(value)
  return tonumber(string.match(value, '^(%d+)|'))
end

local function tombstone_until(value)
  return tonumber(string.match(value, '^[rxus](%d+)|'))
end

local TOMBSTONES_PER_DEVICE = 2

local function hex(bytes)
  return (string.gsub(bytes, '.', function(c) return string.format('%02x', string.byte(c)) end))
end

local function unhex(text)
  return (string.gsub(text, '%x%x', function(cc) return string.char(tonumber(cc, 16)) end))
end

-- Drops the user's expired tokens and tombstones, and returns the live tokens as
-- {field, expires, value}, soonest to expire first, and the tombstones as {field, until}.
local function entries(key, now)
  local all = redis.call('HGETALL', key)
  local live = {}
  local tombstones = {}
  for i = 1, #all, 2 do
    local value = all[i + 1]
    local expires = expires_of(value)
    if expires then
      if expires > now then
        live[#live + 1] = { all[i], expires, value }
      else
        redis.call('HDEL', key, all[i])
      end
    else
      local grace_until = tombstone_until(value)
      if not grace_until or grace_until <= now then
        redis.call('HDEL', key, all[i])
      else
        tombstones[#tombstones + 1] = { all[i], grace_until }
      end
    end
  end
  table.sort(live, function(a, b) return a[2] < b[2] end)
  return live, tombstones
end

local function live_tokens(key, now)
  local live = entries(key, now)
  return live
end

-- Records a token, first evicting the soonest to expire beyond the limit (as `x`
-- tombstones while there is a grace). The hash lives as long as its longest-lived
-- token or tombstone, so an idle user leaves nothing behind. Returns the evicted fields.
local function add_token(key, field, now, expires, started, max, device, grace)
  local live, tombstones = entries(key, now)
  local keep = TOMBSTONES_PER_DEVICE * max
  if #tombstones >= keep then
    table.sort(tombstones, function(a, b) return a[2] < b[2] end)
    for i = 1, #tombstones - keep + 1 do
      redis.call('HDEL', key, tombstones[i][1])
    end
  end
  local evict = math.max(#live - max + 1, 0)
  local evicted = {}
  for i = 1, evict do
    if grace > 0 then
      redis.call('HSET', key, live[i][1],
        string.format('x%d|%s|%s', now + grace, hex(field), live[i][3]))
    else
      redis.call('HDEL', key, live[i][1])
    end
    evicted[#evicted + 1] = live[i][1]
  end
  redis.call('HSET', key, field, string.format('%d|%d|%d|%s', expires, now, started, device))
  local longest = math.max(expires, now + grace)
  if #live > evict and live[#live][2] > longest then
    longest = live[#live][2]
  end
  redis.call('PEXPIRE', key, math.max(longest - now, 1))
  return evicted
end
