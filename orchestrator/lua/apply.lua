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
local find, sub, byte = string.find, string.sub, string.byte
local QUOTE, BACKSLASH, OPEN, CLOSE = 34, 92, 123, 125  -- " \ { }

local function string_end(s, i)  -- s[i] opens a string; the index just past its end
  local k = find(s, '"', i + 1, true)
  while byte(s, k - 1) == BACKSLASH do  -- escaped, unless the backslash is itself escaped
    local b = k - 1
    while byte(s, b - 1) == BACKSLASH do b = b - 1 end
    if (k - b) % 2 == 0 then break end
    k = find(s, '"', k + 1, true)
  end
  return k + 1
end

local function value_end(s, i)  -- the index just past the value starting at s[i]
  local c = byte(s, i)
  if c == QUOTE then return string_end(s, i) end
  if c == OPEN or c == 91 then  -- { or [
    local depth, j = 0, i
    while true do
      local k = find(s, '[][{}"]', j)
      local d = byte(s, k)
      if d == QUOTE then
        j = string_end(s, k)
      else
        depth = depth + ((d == OPEN or d == 91) and 1 or -1)
        j = k + 1
        if depth == 0 then return j end
      end
    end
  end
  return find(s, "[,}%]]", i) or #s + 1  -- a number or a literal
end

-- An object's members: each one's key (its JSON text), and where its value starts and ends.
local function members(s)
  local found = {}
  local i = 2
  while byte(s, i) ~= CLOSE do
    local e = string_end(s, i)
    local v = value_end(s, e + 1)  -- past the colon
    found[#found + 1] = {sub(s, i, e - 1), e + 1, v}
    i = byte(s, v) == 44 and v + 1 or v  -- past a comma
  end
  return found
end

local function merge(target, patch)
  if byte(patch, 1) ~= OPEN then return patch end
  local changes, order = {}, {}
  for _, m in ipairs(members(patch)) do
    changes[m[1]] = sub(patch, m[2], m[3] - 1)
    order[#order + 1] = m[1]
  end
  local parts = {}
  if target and byte(target, 1) == OPEN then
    -- The members the patch leaves alone are copied a run at a time, not one by one.
    local run = nil  -- where the current run of untouched members starts
    local last = 2
    for _, m in ipairs(members(target)) do
      local key, from, to = m[1], m[2], m[3]
      local value = changes[key]
      if value == nil then
        run = run or from - #key - 1
        last = to
      else
        if run then parts[#parts + 1] = sub(target, run, last - 1) end
        run = nil
        if value ~= "null" then
          parts[#parts + 1] = key .. ":" .. merge(sub(target, from, to - 1), value)
        end
        changes[key] = false  -- done
      end
    end
    if run then parts[#parts + 1] = sub(target, run, last - 1) end
  end
  for _, key in ipairs(order) do
    local value = changes[key]
    if value and value ~= "null" then parts[#parts + 1] = key .. ":" .. merge(nil, value) end
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
