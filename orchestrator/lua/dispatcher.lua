-- Take, renew or release the dispatcher lease of a workspace.
-- KEYS: 1 dispatcher key
-- ARGV: 1 replica id, 2 lease period (ms), or "0" to release the lease if this replica holds it
-- Returns 1 if this replica holds the lease now (or released it), 0 if another one holds it.
local holder = redis.call("GET", KEYS[1])
if ARGV[2] == "0" then
  if holder == ARGV[1] then redis.call("DEL", KEYS[1]) return 1 end
  return 0
end
if holder == ARGV[1] then
  redis.call("PEXPIRE", KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
return 1
