-- Apply a projection's writes and advance its checkpoint in one atomic step.
-- KEYS: 1 checkpoints hash
-- ARGV: 1 projection name, 2 expected checkpoint, 3 new checkpoint,
--       4 the writes: a msgpack array of commands, each an array of words.
-- The writes apply only if the checkpoint still equals the one the projector read, so a
-- replay, a crash or a second projector never applies an event twice.
-- Besides Redis commands, two of the projections' own:
--   DELMEMBERS set: delete every key named in a registry set, then the set;
--   HAPPEND hash field value [field value ...]: append each value to its field's
--     space-separated list (the field is set to the value when absent).
-- Returns the checkpoint after the call, and whether these writes were applied.
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
  elseif cmd[1] == "HAPPEND" then
    -- One HMGET and one HSET for the lot; a field appears once per command.
    local fields = {}
    for j = 3, #cmd, 2 do fields[#fields + 1] = cmd[j] end
    local had = redis.call("HMGET", cmd[2], unpack(fields))
    local args = {"HSET", cmd[2]}
    for k, field in ipairs(fields) do
      local value = cmd[2 * k + 2]
      args[#args + 1] = field
      args[#args + 1] = had[k] and (had[k] .. " " .. value) or value
    end
    redis.call(unpack(args))
  else
    redis.call(unpack(cmd))
  end
end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[3])
return {tonumber(ARGV[3]), 1}
