-- One page of the tool-call log, in one consistent step.
-- KEYS: 1 calls hash, 2 scratch key for an intersection, 3.. the index sets to read
--       (one: read it directly; several: intersect them into the scratch key first).
-- ARGV: 1 from (score, inclusive), 2 to (score, inclusive), 3 offset, 4 limit, 5 "asc" | "desc"
-- Returns {total, {ToolCall JSON...}}. Every step is O(log N + limit) on the chosen set,
-- because ranks are found with ZCOUNT rather than by walking an offset.
local source = KEYS[3]
if #KEYS > 3 then
  -- Scores are timestamps, equal in every set: keep the first set's, not their sum.
  local args = {"ZINTERSTORE", KEYS[2], #KEYS - 2}
  for k = 3, #KEYS do args[#args + 1] = KEYS[k] end
  args[#args + 1] = "WEIGHTS"
  for k = 3, #KEYS do args[#args + 1] = (k == 3) and 1 or 0 end
  redis.call(unpack(args))
  source = KEYS[2]
end
local from, to = ARGV[1], ARGV[2]
local offset, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local total = redis.call("ZCOUNT", source, from, to)
local members = {}
if offset < total then
  local stop = math.min(offset + limit, total) - 1
  if ARGV[5] == "desc" then
    local above = redis.call("ZCOUNT", source, "(" .. to, "+inf")
    members = redis.call("ZREVRANGE", source, above + offset, above + stop)
  else
    local below = redis.call("ZCOUNT", source, "-inf", "(" .. from)
    members = redis.call("ZRANGE", source, below + offset, below + stop)
  end
end
if source == KEYS[2] then redis.call("DEL", KEYS[2]) end
if #members == 0 then return {total, {}} end
return {total, redis.call("HMGET", KEYS[1], unpack(members))}
