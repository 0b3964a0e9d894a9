-- Apply a projection's writes and advance its checkpoint in one atomic step.
-- KEYS: 1 checkpoints hash
-- ARGV: 1 projection name, 2 expected checkpoint, 3 new checkpoint,
--       4 the writes: a msgpack array of commands, each an array of words.
-- The writes apply only if the checkpoint still equals the one the projector read, so a
-- replay, a crash or a second projector never applies an event twice.
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
  else
    redis.call(unpack(cmd))
  end
end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[3])
return {tonumber(ARGV[3]), 1}
