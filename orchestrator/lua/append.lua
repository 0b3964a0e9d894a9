-- Append events to a workspace's log: each append atomic, all or nothing, and answered on its
-- own. The group commit sends every append queued for one workspace in one call; they run in
-- order, as a pipeline of single appends would, and one that fails leaves the others alone.
-- KEYS: 1 events stream, 2 meta hash, 3 versions hash, then one idempotency record per
--       append ("" when it has none)
-- ARGV: the number of appends, then for each: its number of arguments, and its arguments:
--       1 fingerprint, 2 idempotency ttl (ms), 3 stored result, 4 maxlen (0: unbounded),
--       5 purge flag ("1": drop the stream first, keep only the config version),
--       6 number of version checks C, then C pairs (entity, expected version),
--       then the number of events N, then N triples (type, payload, space-separated entities).
-- Returns one reply per append: {"ok", first_seq, n} | {"dup", first_seq, n, result}
--       | {"mismatch"} | {"conflict", entity, current_version} | {"error", message}

-- One append; its arguments are ARGV[b + 1], ARGV[b + 2], ...
local function append(idem, b)
  if idem ~= "" then
    local rec = redis.call("HMGET", idem, "fingerprint", "first", "n", "result")
    if rec[1] then
      if rec[1] ~= ARGV[b + 1] then return {"mismatch"} end
      return {"dup", tonumber(rec[2]), tonumber(rec[3]), rec[4]}
    end
  end

  local i = b + 7
  local checks = tonumber(ARGV[b + 6])
  for _ = 1, checks do
    local entity, expected = ARGV[i], ARGV[i + 1]
    local current = redis.call("HGET", KEYS[3], entity) or "0"
    if current ~= expected then return {"conflict", entity, tonumber(current)} end
    i = i + 2
  end

  if ARGV[b + 5] == "1" then
    local config_version = redis.call("HGET", KEYS[3], "config")
    redis.call("DEL", KEYS[1], KEYS[3])
    if config_version then redis.call("HSET", KEYS[3], "config", config_version) end
  end

  local n = tonumber(ARGV[i])
  i = i + 1
  local last = redis.call("HINCRBY", KEYS[2], "seq", n)
  local first = last - n + 1
  local now = redis.call("TIME")
  local ts = tostring(now[1] * 1000 + math.floor(now[2] / 1000))
  local maxlen = tonumber(ARGV[b + 4])
  for k = 0, n - 1 do
    local seq = first + k
    local id = seq .. "-0"
    if maxlen > 0 then
      redis.call("XADD", KEYS[1], "MAXLEN", "~", maxlen, id,
        "type", ARGV[i], "payload", ARGV[i + 1], "ts", ts)
    else
      redis.call("XADD", KEYS[1], id, "type", ARGV[i], "payload", ARGV[i + 1], "ts", ts)
    end
    for entity in string.gmatch(ARGV[i + 2], "%S+") do
      redis.call("HSET", KEYS[3], entity, seq)
    end
    i = i + 3
  end

  if idem ~= "" then
    redis.call("HSET", idem, "fingerprint", ARGV[b + 1], "first", first, "n", n,
      "result", ARGV[b + 3])
    redis.call("PEXPIRE", idem, ARGV[b + 2])
  end
  return {"ok", first, n}
end

local replies, b = {}, 1
for m = 1, tonumber(ARGV[1]) do
  local ok, reply = pcall(append, KEYS[3 + m], b + 1)
  if not ok then
    reply = {"error", type(reply) == "table" and (reply.err or "error") or tostring(reply)}
  end
  replies[m] = reply
  b = b + 1 + tonumber(ARGV[b + 1])
end
return replies
