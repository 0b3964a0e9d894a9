-- Apply a projection's writes and advance its checkpoint in one atomic step.
-- KEYS: 1 checkpoints hash
-- ARGV: 1 projection name, 2 expected checkpoint, 3 new checkpoint,
--       4 the writes: a msgpack array of commands, each an array of words.
-- The writes apply only if the checkpoint still equals the one the projector read, so a
-- replay, a crash or a second projector never applies an event twice.
-- Besides Redis commands, two of the projections' own:
--   DELMEMBERS set: delete every key named in a registry set, then the set;
--   CALLIDS hash all registry prefix id seq score [id seq score ...]: index each call by
--     its callID: the hash maps a callID to its call's seq; a callID seen again gets a
--     sorted set (prefix .. id, registered), holding the first call too, and maps to "*".
--   MERGEPATCH hash field patch: merge the JSON Merge Patch (RFC 7396) into the JSON
--     object held at the hash's field (absent: {}); see merge() below.
-- Returns the checkpoint after the call, and whether these writes were applied.

-- JSON Merge Patch on JSON text, as orchestrator.config.merge_patch does on values, and
-- lossless: only objects are parsed; any other value (string, number, array, literal) is
-- kept as the very text it was written in, and members keep their order (new ones last).
-- The texts are msgspec's (no blanks), so the result is the text Python would encode.
local find, sub = string.find, string.sub

local function string_end(s, i)  -- s[i] opens a string; the index just past its end
  local j = i + 1
  while true do
    local k = find(s, '["\\]', j)
    if sub(s, k, k) == '"' then return k + 1 end
    j = k + 2  -- an escape: skip the escaped character
  end
end

local function value_end(s, i)  -- the index just past the value starting at s[i]
  local c = sub(s, i, i)
  if c == '"' then return string_end(s, i) end
  if c == "{" or c == "[" then
    local depth, j = 0, i
    while true do
      local k = find(s, '[][{}"]', j)
      local d = sub(s, k, k)
      if d == '"' then
        j = string_end(s, k)
      else
        depth = depth + ((d == "{" or d == "[") and 1 or -1)
        j = k + 1
        if depth == 0 then return j end
      end
    end
  end
  return find(s, "[,}%]]", i) or #s + 1  -- a number or a literal
end

local function members(s)  -- an object's keys (as JSON text) in order, and key -> value text
  local keys, values = {}, {}
  local i = 2
  while sub(s, i, i) ~= "}" do
    local e = string_end(s, i)
    local key = sub(s, i, e - 1)
    local v = value_end(s, e + 1)  -- past the colon
    keys[#keys + 1] = key
    values[key] = sub(s, e + 1, v - 1)
    i = sub(s, v, v) == "," and v + 1 or v
  end
  return keys, values
end

local function merge(target, patch)
  if sub(patch, 1, 1) ~= "{" then return patch end
  local keys, values = {}, {}
  if target and sub(target, 1, 1) == "{" then keys, values = members(target) end
  local changed, changes = members(patch)
  for _, key in ipairs(changed) do
    local value = changes[key]
    if value == "null" then
      values[key] = nil
    else
      if values[key] == nil then keys[#keys + 1] = key end
      values[key] = merge(values[key], value)
    end
  end
  local parts = {}
  for _, key in ipairs(keys) do
    if values[key] ~= nil then parts[#parts + 1] = key .. ":" .. values[key] end
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local current = tonumber(redis.call("HGET", KEYS[1], ARGV[1]) or "0")
if current ~= tonumber(ARGV[2]) then return {current, 0} end
for _, cmd in ipairs(cmsgpack.unpack(ARGV[4])) do
  if cmd[1] == "DELMEMBERS" then
    -- Drop every key named in a registry set, then the set itself; many keys per DEL (a
    -- log's registry holds about a key per call).
    local members = redis.call("SMEMBERS", cmd[2])
    for i = 1, #members, 1000 do
      redis.call("DEL", unpack(members, i, math.min(i + 999, #members)))
    end
    redis.call("DEL", cmd[2])
  elseif cmd[1] == "MERGEPATCH" then
    redis.call("HSET", cmd[2], cmd[3], merge(redis.call("HGET", cmd[2], cmd[3]), cmd[4]))
  elseif cmd[1] == "CALLIDS" then
    local hash, all, registry, prefix = cmd[2], cmd[3], cmd[4], cmd[5]
    for j = 6, #cmd, 3 do
      local id, seq, score = cmd[j], cmd[j + 1], cmd[j + 2]
      if redis.call("HSETNX", hash, id, seq) == 0 then
        local index = prefix .. id
        local first = redis.call("HGET", hash, id)
        if first ~= "*" then
          redis.call("ZADD", index, redis.call("ZSCORE", all, first), first)
          redis.call("HSET", hash, id, "*")
          redis.call("SADD", registry, index)
        end
        redis.call("ZADD", index, score, seq)
      end
    end
  else
    redis.call(unpack(cmd))
  end
end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[3])
return {tonumber(ARGV[3]), 1}
