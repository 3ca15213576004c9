-- KEYS: user key. ARGV: now ms. Returns hash, value pairs of the live tokens, soonest to
-- expire first.
local out = {}
for _, token in ipairs(live_tokens(KEYS[1], tonumber(ARGV[1]))) do
  out[#out + 1] = token[1]
  out[#out + 1] = token[3]
end
return out
