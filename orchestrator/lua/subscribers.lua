-- Report this replica's subscriber count, or (with ARGV[1] == "") just read the total.
-- KEYS: 1 subscribers hash (replica id -> "<count>:<expires_at_ms>")
-- ARGV: 1 replica id or "", 2 count, 3 ttl (ms)
-- Returns the sum over replicas whose report has not expired; expired reports are removed.
local now = redis.call("TIME")
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
if ARGV[1] ~= "" then
  if tonumber(ARGV[2]) > 0 then
    redis.call("HSET", KEYS[1], ARGV[1], ARGV[2] .. ":" .. (now_ms + tonumber(ARGV[3])))
  else
    redis.call("HDEL", KEYS[1], ARGV[1])
  end
end
local total = 0
local reports = redis.call("HGETALL", KEYS[1])
for k = 1, #reports, 2 do
  local count, expires = string.match(reports[k + 1], "^(%d+):(%d+)$")
  if count and tonumber(expires) > now_ms then
    total = total + tonumber(count)
  else
    redis.call("HDEL", KEYS[1], reports[k])
  end
end
return total
