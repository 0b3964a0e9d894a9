-- One page of the tool-call log, in one consistent step.
-- KEYS: 1 calls hash, 2 intersection key (scratch, or a kept cache), 3 its meta hash,
--       4 checkpoints hash, 5 the all-calls set, 6 the callID hash, 7 a scratch set for the
--       call of ARGV[9], 8 the sorted set of ARGV[9]'s calls (if it names several),
--       9.. the index sets of the other filters
--       (none: read the all-calls set; one: read it directly; several: intersect).
-- ARGV: 1 from (score, inclusive), 2 to (score, inclusive), 3 offset, 4 limit, 5 "asc" | "desc",
--       6 the log projection's name in the checkpoints hash, 7 smallest index size from which
--       an intersection is kept, 8 how long a kept intersection lives unused (ms),
--       9 the callID filter ("" for none).
-- Returns {total, {ToolCall JSON...}}. Paging is O(log N + limit) on the chosen set, because
-- ranks are found with ZCOUNT rather than by walking an offset.
--
-- An intersection costs O(smallest index x filters). Below ARGV[7] it is computed into the
-- scratch key and dropped. From ARGV[7] on it is kept, with the log checkpoint and the number
-- of calls it was built at, and later queries bring it up to date with the calls projected
-- since (members are zero-padded seqs, so the new ones are found by seq, O(1) each) rather
-- than intersect again: the cost follows what was written since, not the size of the log.
-- A purge or rebuild drops calls; then the all-calls count no longer adds up, and the
-- intersection is computed again.
--
-- The callID index is a hash: callID -> the seq of its call, or "*" once a second call came
-- with the same callID, which then has a sorted set like any other filter value (KEYS[8]).
-- For a callID of one call, that call, with its timestamp, goes in a scratch set that stands
-- in for an index; it is not kept up to date, so an intersection with it is never kept.
local calls_hash, inter, meta, checkpoints, all = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local call_ids, picked, call_index, call_id = KEYS[6], KEYS[7], KEYS[8], ARGV[9]
local FIRST_INDEX = 9
local REFRESH_COST = 1 -- a seq checked (ZMSCORE, in chunks) costs about an intersection step
local CHUNK = 500 -- seqs checked per ZMSCORE

local function intersect(indexes)
  -- Scores are timestamps, equal in every set: keep the first set's, not their sum.
  local args = {"ZINTERSTORE", inter, #indexes}
  for _, key in ipairs(indexes) do args[#args + 1] = key end
  args[#args + 1] = "WEIGHTS"
  for k = 1, #indexes do args[#args + 1] = (k == 1) and 1 or 0 end
  return redis.call(unpack(args))
end

-- Those of `members` present in `key`, each with its value in `carried` (default: its
-- score in `key`); one ZMSCORE call.
local function present(key, members, carried)
  local found, values = {}, {}
  if #members == 0 then return found, values end
  local reply = redis.call("ZMSCORE", key, unpack(members))
  for i = 1, #members do
    if reply[i] then
      found[#found + 1] = members[i]
      values[#values + 1] = carried and carried[i] or reply[i]
    end
  end
  return found, values
end

-- Add the calls of seqs (from, to] that match every filter, CHUNK seqs at a time; returns
-- (calls seen, added).
local function refresh(indexes, from, to)
  local seen, added = 0, 0
  for low = from + 1, to, CHUNK do
    local members = {}
    for seq = low, math.min(low + CHUNK - 1, to) do
      members[#members + 1] = string.format("%016d", seq)
    end
    local calls, scores = present(all, members, nil)
    seen = seen + #calls
    for _, key in ipairs(indexes) do
      calls, scores = present(key, calls, scores)
    end
    if #calls > 0 then
      local args = {"ZADD", inter}
      for i, member in ipairs(calls) do
        args[#args + 1] = scores[i]
        args[#args + 1] = member
      end
      redis.call(unpack(args))
      added = added + #calls
    end
  end
  return seen, added
end

-- Bring the kept intersection up to date, or build it; `indexes` smallest first.
local function kept(indexes, smallest)
  local ttl = ARGV[8]
  local checkpoint = tonumber(redis.call("HGET", checkpoints, ARGV[6]) or "0")
  local calls = redis.call("ZCARD", all)
  local m = redis.call("HMGET", meta, "seq", "calls", "size")
  local seq, built_calls, size = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
  local fresh = false
  if seq and checkpoint >= seq and redis.call("ZCARD", inter) == size
      and (checkpoint - seq) * REFRESH_COST <= smallest * (#indexes - 1) then
    local seen, added = refresh(indexes, seq, checkpoint)
    fresh = (calls == built_calls + seen)
    size = size + added
  end
  if not fresh then size = intersect(indexes) end
  redis.call("HSET", meta, "seq", checkpoint, "calls", calls, "size", size)
  redis.call("PEXPIRE", meta, ttl)
  redis.call("PEXPIRE", inter, ttl)
end

-- The index of `call_id`: its sorted set, or the scratch set `picked` holding its one call.
local function call_source()
  local seq = redis.call("HGET", call_ids, call_id)
  if seq == "*" then return call_index, false end
  if seq then
    local score = redis.call("ZSCORE", all, seq)
    if score then redis.call("ZADD", picked, score, seq) end
  end
  return picked, true
end

local picked_used = false

local function source()
  local indexes = {}
  if call_id ~= "" then
    indexes[1], picked_used = call_source()
  end
  for k = FIRST_INDEX, #KEYS do indexes[#indexes + 1] = KEYS[k] end
  if #indexes == 0 then return all, false end
  if #indexes == 1 then return indexes[1], false end
  local sizes = {}
  for _, key in ipairs(indexes) do sizes[key] = redis.call("ZCARD", key) end
  table.sort(indexes, function(a, b) return sizes[a] < sizes[b] end)
  local smallest = sizes[indexes[1]]
  if smallest == 0 then return indexes[1], false end
  if smallest < tonumber(ARGV[7]) or picked_used then
    intersect(indexes)
    return inter, true
  end
  kept(indexes, smallest)
  return inter, false
end

local set, scratch = source()
local from, to = ARGV[1], ARGV[2]
local offset, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local total = redis.call("ZCOUNT", set, from, to)
local members = {}
if offset < total then
  local stop = math.min(offset + limit, total) - 1
  if ARGV[5] == "desc" then
    local above = redis.call("ZCOUNT", set, "(" .. to, "+inf")
    members = redis.call("ZREVRANGE", set, above + offset, above + stop)
  else
    local below = redis.call("ZCOUNT", set, "-inf", "(" .. from)
    members = redis.call("ZRANGE", set, below + offset, below + stop)
  end
end
if scratch then redis.call("DEL", inter, meta) end
if picked_used then redis.call("DEL", picked) end
if #members == 0 then return {total, {}} end
return {total, redis.call("HMGET", calls_hash, unpack(members))}
