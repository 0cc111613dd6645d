"""The Redis limiter's Lua script: a whole batch of decisions and settlements, atomically.

It transliterates ``gcra.py`` (keep them in step); ``redis_limiter.py`` says
what the answers mean and ``redis_wire.py`` packs the arguments.
"""

from __future__ import annotations

# Seconds since 2025-01-01T00:00Z: keeps script times small, hence precise, as doubles.
_EPOCH = "1735689600"

# One call runs a batch (packed by ``redis_batch.py``: ``Plan`` for decisions, ``Op``s for
# settlements). KEYS: its counters, each once. ARGV[1]: lease TTL (ms); then operations:
#   'a', n, lease id, then n x (key index, 'r' | 'c', interval_s, burst | most in flight, cost)
#     a decision: check every limit, charge all only if all admit (see ``gcra.py``);
#   'c', key index, lease id: release a lease;
#   'r', key index, interval_s, delta: move a rate counter by delta units (a settlement).
# Returns one string: per decision, in order, "admitted denied" (1|0, index of the first
# refusing limit or 0), then per limit "level wait_s": TAT - now (rate) or leases in flight
# (concurrency), and how long until its cost would fit; all separated by spaces.
BATCH_LUA = """
local EPS = 1e-6
local clock = redis.call('TIME')
local now = (tonumber(clock[1]) - EPOCH) + tonumber(clock[2]) / 1e6
local now_s = string.format('%.17g', now)
local ttl_ms = tonumber(ARGV[1])
local expiry = string.format('%.17g', now + ttl_ms / 1000)
local out, j, last = {}, 2, #ARGV
while j <= last do
  local op = ARGV[j]
  if op == 'a' then
    local count, lease, base = tonumber(ARGV[j + 1]), ARGV[j + 2], j + 3
    local level, wait, held, denied = {}, {}, {}, 0
    for i = 1, count do
      local k = base + (i - 1) * 5
      local key, size = KEYS[tonumber(ARGV[k])], tonumber(ARGV[k + 3])
      wait[i] = 0
      if ARGV[k + 1] == 'r' then
        local interval, cost = tonumber(ARGV[k + 2]), tonumber(ARGV[k + 4])
        level[i] = math.max(tonumber(redis.call('GET', key)) or now, now)
        local w = level[i] + (math.min(cost, size) - size) * interval - now
        if w > EPS then
          wait[i] = w
          if denied == 0 then denied = i end
        end
      else
        redis.call('ZREMRANGEBYSCORE', key, '-inf', now_s)
        level[i] = redis.call('ZCARD', key)
        held[i] = redis.call('ZSCORE', key, lease) ~= false
        if not held[i] and level[i] >= size and denied == 0 then denied = i end
      end
    end
    if denied == 0 then
      for i = 1, count do
        local k = base + (i - 1) * 5
        local key = KEYS[tonumber(ARGV[k])]
        if ARGV[k + 1] == 'r' then
          level[i] = level[i] + tonumber(ARGV[k + 4]) * tonumber(ARGV[k + 2])
          local ms = math.ceil((level[i] - now) * 1000)
          if ms > 0 then redis.call('SET', key, string.format('%.17g', level[i]), 'PX', ms) end
        else
          redis.call('ZADD', key, expiry, lease)
          if not held[i] then level[i] = level[i] + 1 end
          if redis.call('PTTL', key) < ttl_ms then redis.call('PEXPIRE', key, ttl_ms) end
        end
      end
    end
    out[#out + 1] = denied == 0 and '1' or '0'
    out[#out + 1] = denied
    for i = 1, count do
      local value = level[i]
      if ARGV[base + (i - 1) * 5 + 1] == 'r' then value = value - now end
      out[#out + 1] = string.format('%.17g', value)
      out[#out + 1] = wait[i] == 0 and '0' or string.format('%.17g', wait[i])
    end
    j = base + count * 5
  elseif op == 'c' then
    redis.call('ZREM', KEYS[tonumber(ARGV[j + 1])], ARGV[j + 2])
    j = j + 3
  elseif op == 'r' then
    local key = KEYS[tonumber(ARGV[j + 1])]
    local tat = math.max(tonumber(redis.call('GET', key)) or now, now)
    tat = tat + tonumber(ARGV[j + 3]) * tonumber(ARGV[j + 2])
    local ms = math.ceil((tat - now) * 1000)
    if ms > 0 then
      redis.call('SET', key, string.format('%.17g', tat), 'PX', ms)
    else
      redis.call('DEL', key)
    end
    j = j + 4
  else
    return redis.error_reply('lockgate limiter: unknown operation ' .. tostring(op))
  end
end
return table.concat(out, ' ')
""".replace("EPOCH", _EPOCH)
