-- One step of the generic cell rate algorithm. KEYS: the counter. ARGV: the interval
-- between events and the burst tolerance, in ms. Returns 0 when the event is allowed
-- (and counted), else the ms to wait.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local allowed_at = tat - tolerance
if now < allowed_at then
  return allowed_at - now
end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', tat - now)
return 0
