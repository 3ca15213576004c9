-- KEYS: user key. ARGV: old token hash, new token hash, now ms, expires ms, max tokens,
-- grace ms, maximum session age ms (0: none).
-- Returns {device, session started ms, expires ms, evicted hash…}, or false if the old
-- token was not live. Replacing the old field is the gate: of concurrent rotations only
-- one sees it live (and, within the grace, one more sees its tombstone).
local key = KEYS[1]
local now = tonumber(ARGV[3])
local grace = tonumber(ARGV[6])
local max_age = tonumber(ARGV[7])
local old = redis.call('HGET', key, ARGV[1])
if not old then
  return false
end
if string.sub(old, 1, 1) == 's' then
  -- Signed out by the service: the notice stays, for the requests that follow.
  return false
end
local gone = {}
if string.sub(old, 1, 1) == 'r' then
  -- Rotated out moments ago, and presented again: its successor never reached the
  -- client, or this is a concurrent duplicate. It rotates once more, and the successor
  -- it had gives way.
  redis.call('HDEL', key, ARGV[1])
  local grace_until, successor = string.match(old, '^r(%d+)|(%x+)$')
  if not grace_until or tonumber(grace_until) <= now then
    return false
  end
  successor = unhex(successor)
  old = redis.call('HGET', key, successor)
  if not old or not expires_of(old) then
    return false
  end
  redis.call('HDEL', key, successor)
  gone[1] = successor
end
local expires, _, started, device = string.match(old, '^(%d+)|(%d+)|(%d+)|(.*)$')
if not expires or tonumber(expires) <= now then
  redis.call('HDEL', key, ARGV[1])
  return false
end
started = tonumber(started)
local new_expires = tonumber(ARGV[4])
if max_age > 0 then
  if started + max_age <= now then
    redis.call('HDEL', key, ARGV[1])
    return false
  end
  new_expires = math.min(new_expires, started + max_age)
end
if grace > 0 and #gone == 0 then
  redis.call('HSET', key, ARGV[1], string.format('r%d|%s', now + grace, hex(ARGV[2])))
else
  redis.call('HDEL', key, ARGV[1])
end
local evicted = add_token(key, ARGV[2], now, new_expires, started, tonumber(ARGV[5]), device,
  grace)
local out = { device, string.format('%d', started), string.format('%d', new_expires) }
for _, field in ipairs(gone) do
  out[#out + 1] = field
end
for _, field in ipairs(evicted) do
  out[#out + 1] = field
end
return out
