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
