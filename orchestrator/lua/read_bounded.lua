-- XRANGE with a byte budget: a replay's read of many entries must not fetch hundreds of
-- large ones (each up to ~1 MB, into Redis's reply and the replica) only to keep one. The
-- stream is read here in chunks of a few entries, and what fits is returned.
-- KEYS: 1 events stream
-- ARGV: 1 first id (inclusive), 2 count, 3 budget (bytes of type and payload), 4 chunk
-- Returns {cut, id1, type1, payload1, id2, ...}: the first entry always (however large), then
-- as many as fit in the budget, up to count; cut is 1 when the budget ended the read and more
-- entries follow. Flat, and without the fields a replay does not send, the reply is smaller
-- to build and to parse than XRANGE's.
local start, count = ARGV[1], tonumber(ARGV[2])
local budget, chunk = tonumber(ARGV[3]), tonumber(ARGV[4])
local out, n, size = {0}, 0, 0
while n < count do
  local wanted = math.min(chunk, count - n)
  local entries = redis.call("XRANGE", KEYS[1], start, "+", "COUNT", wanted)
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    local type_, payload
    if fields[1] == "type" and fields[3] == "payload" then -- as append.lua writes them
      type_, payload = fields[2], fields[4]
    else
      for j = 1, #fields, 2 do
        if fields[j] == "type" then
          type_ = fields[j + 1]
        elseif fields[j] == "payload" then
          payload = fields[j + 1]
        end
      end
    end
    size = size + #type_ + #payload
    if size > budget and n > 0 then
      out[1] = 1
      return out
    end
    local at = 3 * n + 1
    out[at + 1], out[at + 2], out[at + 3] = entry[1], type_, payload
    n = n + 1
  end
  if #entries < wanted then
    break
  end
  start = "(" .. entries[#entries][1]
end
return out
