"""The Lua scripts behind the Redis store: every state change is one script.

Redis runs a script to completion before it serves anything else, and
(Redis >= 5, effects replication) writes its effects to the AOF as one
MULTI/EXEC block, which a restart loads entirely or not at all. So each
commit, sample and priority update below is atomic across any number of
replay replicas, and survives a Redis restart whole or not at all.

Keys (``P`` = ``actorq:{TABLE}:``; the braces keep them in one cluster slot):

- ``P meta`` hash: ``settings`` (capacity, limiter, sampler: every replica
  must agree), ``epoch`` (random, new whenever the table is created),
  ``signature`` (field layout JSON), ``row_bytes``.
- ``P state`` hash: ``end_key``, ``size`` (live keys are [end_key - size,
  end_key)), limiter counters ``inserts``/``samples``/``deletes``,
  ``insert_calls``, ``sample_batches``; prioritized: ``max_leaf``
  (priority^alpha given to new items) and ``version`` (count of priority changes).
- ``P rows`` hash: slot (4-byte little-endian unsigned, ``SLOT_FORMAT``) ->
  packed row; key k lives in slot k % capacity (a ring: FIFO eviction is the
  overwrite of the oldest slot). One HMGET reads a whole batch; fixed-width
  field names let the replica pack that HMGET with numpy (``hmget_command``).
- ``P leaves`` string (prioritized): priority^alpha of slot s as float64 at byte 8 s.
- ``P changes`` stream (prioritized): one entry per priority change, id
  ``VERSION-1``, so a replica can catch up from the version it has; trimmed
  to about ``CHANGES_KEPT`` entries (a replica further behind reloads ``leaves``).
- ``P actors`` / ``P seen`` hashes: transitions inserted by and last insert
  time of each actor_id.
- ``P lease`` string (prioritized): held for a moment by a sampler that
  fell behind (see SAMPLE_PRIORITIZED); expires by itself.

Sampling draws keys in the replica, and the script only checks that the
table is still in the state they were drawn for, and counts the batch; an
HMGET queued after it in the same MULTI/EXEC reads the rows, so no row passes
through Lua (about 1 us a row). Uniform: keys ``first + uniform_offsets(u,
size)`` for the live range last seen; if inserts moved it, the script
draws from the same numbers itself and sends the rows (MOVED; one round trip
either way). Prioritized: the sum tree over ``leaves`` is not stored; every
replica builds it (``sampler.SumTree``, numpy) and keeps it in step through
the ``changes`` log. A replica draws slots from its tree at version v, and
the script serves them only if the table is still at version v; otherwise
it sends back the changes the replica missed (STALE), which it applies
before drawing again. So a served batch was drawn from exactly the table's
current priorities, as if the draw had run inside the script, at numpy
speed instead of Lua's (a descent per sample in Lua cost about 10 us).

Every script gets KEYS = meta, state, rows, leaves, changes, actors, seen, lease and
ARGV[1..5] = settings text, capacity, min_size_to_sample,
samples_per_insert, error_buffer, ARGV[6] prioritized (0/1), ARGV[7] a
fresh epoch (used only if this call creates the table); its own arguments
follow. Numbers handed to redis.call are converted by Redis with full
precision (never Lua's 14-digit tostring), so counters stay exact. The
limiter repeats ``rate_limiter.SampleToInsertRatio`` operation for operation.
"""

from __future__ import annotations

# Most values one Lua unpack() may spread into a call (Lua's C stack holds 8000).
ARGS_PER_CALL = 4000
# Priority changes kept in the stream; a replica further behind reloads the leaves.
CHANGES_KEPT = 4096
# Most changes a STALE reply carries (more: the replica reloads the leaves).
CHANGES_PER_REPLY = 256
# How long a sampler that came back STALE may hold priority changes off.
LEASE_MS = 250
# How a slot is written as a field of the rows hash (Lua's struct and numpy's '<u4').
SLOT_FORMAT = "<I4"
# Part of the table's settings: a table written with other field names is refused.
ROWS_LAYOUT = "slot-u32le"

PRELUDE = f"""
local meta, state, rows, leaves, changes, actors, seen, lease =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local settings = ARGV[1]
local cap = tonumber(ARGV[2])
local min_size = tonumber(ARGV[3])
local spi = tonumber(ARGV[4])
local eb = tonumber(ARGV[5])
local prioritized = ARGV[6] == '1'
local ARGS_PER_CALL = {ARGS_PER_CALL}
local CHANGES_KEPT = {CHANGES_KEPT}
local CHANGES_PER_REPLY = {CHANGES_PER_REPLY}
local LEASE_MS = {LEASE_MS}
local function slot_field(slot) return struct.pack('{SLOT_FORMAT}', slot) end

-- The table's settings, written by the first replica; any other must match.
local function attach()
  local stored = redis.call('HGET', meta, 'settings')
  if not stored then
    redis.call('DEL', rows, leaves, changes, actors, seen)
    redis.call('HSET', meta, 'settings', settings, 'epoch', ARGV[7])
    redis.call('HSET', state, 'end_key', 0, 'size', 0, 'inserts', 0, 'samples', 0,
      'deletes', 0, 'insert_calls', 0, 'sample_batches', 0, 'max_leaf', 1, 'version', 0)
    redis.call('DEL', lease)
    if prioritized then redis.call('SETRANGE', leaves, cap * 8 - 1, '\\0') end
    return nil
  end
  if stored ~= settings then return stored end
  return nil
end

local function counters()
  local v = redis.call('HMGET', state, 'end_key', 'size', 'inserts', 'samples', 'deletes')
  return tonumber(v[1]), tonumber(v[2]), tonumber(v[3]), tonumber(v[4]), tonumber(v[5])
end

-- SampleToInsertRatio.can_insert / can_sample, same float operations.
local function can_insert(ins, smp, del, n)
  if ins + n - del <= min_size then return true end
  if spi <= 0 then return true end
  return (ins + n) * spi - smp <= spi * min_size + eb
end

local function can_sample(ins, smp, del, n)
  if ins - del < min_size then return false end
  if spi <= 0 then return true end
  return ins * spi - smp - n >= spi * min_size - eb
end

-- How many of wanted batches (the first allowed) the limiter lets through in a row.
local function count_served(ins, smp, del, batch, wanted)
  local served = 1
  while served < wanted and can_sample(ins, smp + served * batch, del, batch) do
    served = served + 1
  end
  return served
end

-- redis.call(cmd, key, args...) in calls of at most ARGS_PER_CALL arguments.
local function spread(cmd, key, args)
  if #args == 0 then return {{}} end
  if #args <= ARGS_PER_CALL then  -- one call: its reply as is, no copy per row
    local part = redis.call(cmd, key, unpack(args))
    if type(part) == 'table' then return part end
    return {{}}
  end
  local replies = {{}}
  for i = 1, #args, ARGS_PER_CALL do
    local part = redis.call(cmd, key, unpack(args, i, math.min(i + ARGS_PER_CALL - 1, #args)))
    if type(part) == 'table' then
      for _, r in ipairs(part) do replies[#replies + 1] = r end
    end
  end
  return replies
end

-- Record one priority change (the fields a replica needs to replay it); its version.
local function log_change(fields)
  local version = redis.call('HINCRBY', state, 'version', 1)
  redis.call('XADD', changes, 'MAXLEN', '~', CHANGES_KEPT, version .. '-1', unpack(fields))
  return version
end

local mismatch = attach()
if mismatch then return {{'SETTINGS', mismatch}} end
"""

# Make sure the table exists with our settings (a replica starting up).
ATTACH = (
    PRELUDE
    + """
return {'OK'}
"""
)

# ARGV[8] signature JSON, [9] row bytes, [10] transitions, [11] packed rows,
# [12] actor_id, [13] unix time.
# Reply: {'OK', size, version, end_key, change...} (prioritized: the priority
# change, as logged; uniform: version 0, no change) | {'WAIT'} (rate limiter)
# | {'LEASED'} (a sampler's lease: retry in a moment) | {'SIGNATURE', stored}
# | {'SETTINGS', stored}.
INSERT = (
    PRELUDE
    + """
local sig = redis.call('HGET', meta, 'signature')
if not sig then
  redis.call('HSET', meta, 'signature', ARGV[8], 'row_bytes', ARGV[9])
elseif sig ~= ARGV[8] then
  return {'SIGNATURE', sig}
end
local end_key, size, ins, smp, del = counters()
local n = tonumber(ARGV[10])
-- Admitted on one insert, as ReplayTable (see its docstring).
if not can_insert(ins, smp, del, 1) then return {'WAIT'} end
-- A prioritized sampler holds changes off for the moment it needs to draw.
if prioritized and redis.call('EXISTS', lease) == 1 then return {'LEASED'} end
local rb = tonumber(redis.call('HGET', meta, 'row_bytes'))
local blob = ARGV[11]
local fields = {}
for i = 0, n - 1 do
  fields[#fields + 1] = slot_field((end_key + i) % cap)
  fields[#fields + 1] = string.sub(blob, i * rb + 1, (i + 1) * rb)
end
spread('HSET', rows, fields)
local evicted = math.max(0, size + n - cap)
size = size + n - evicted
redis.call('HSET', state, 'end_key', end_key + n, 'size', size, 'inserts', ins + n,
  'deletes', del + evicted)
redis.call('HINCRBY', state, 'insert_calls', 1)
redis.call('HINCRBY', actors, ARGV[12], n)
redis.call('HSET', seen, ARGV[12], ARGV[13])
if not prioritized then return {'OK', size, 0, end_key + n} end
-- New items get the largest priority seen so far; their slots run from
-- end_key % cap, wrapping around once at most (n <= cap).
local leaf = struct.pack('<d', tonumber(redis.call('HGET', state, 'max_leaf')))
local first_slot = end_key % cap
local head = math.min(n, cap - first_slot)
redis.call('SETRANGE', leaves, first_slot * 8, string.rep(leaf, head))
if head < n then redis.call('SETRANGE', leaves, 0, string.rep(leaf, n - head)) end
local change = {'kind', 'insert', 'slot', first_slot, 'count', n, 'leaf', leaf,
  'end_key', end_key + n, 'size', size}
local version = log_change(change)
return {'OK', size, version, end_key + n, unpack(change)}
"""
)

# Uniform. ARGV[8] batch size, [9] the first key and [10] the size the caller
# drew its keys for, [11] its uniform numbers (float64), [12] the batches
# wanted (its numbers are for that many). Serves the first batch if the
# limiter allows it, then as many more as it allows, as if sampled one by
# one. If the live range is still that one, the rows come from an HMGET the
# caller queued right after this script in the same MULTI/EXEC (for every
# batch wanted; it keeps those served), so no row passes through Lua (about
# 1 us a row); if inserts moved it, the script draws from the same numbers
# (``uniform_offsets``) and reads the served rows itself, saving a second
# round trip.
# Reply: {'OK', served} (the HMGET's rows are the batches) |
# {'MOVED', first, size, rows, served} | {'WAIT'} | {'SETTINGS', stored}.
SAMPLE_UNIFORM = (
    PRELUDE
    + """
local batch = tonumber(ARGV[8])
local end_key, size, ins, smp, del = counters()
if size == 0 or not can_sample(ins, smp, del, batch) then return {'WAIT'} end
local served = count_served(ins, smp, del, batch, tonumber(ARGV[12]))
redis.call('HINCRBY', state, 'samples', served * batch)
redis.call('HINCRBY', state, 'sample_batches', served)
local first = end_key - size
if first == tonumber(ARGV[9]) and size == tonumber(ARGV[10]) then return {'OK', served} end
local fields = {}
local wanted = served * batch
for i = 1, wanted, 500 do
  local k = math.min(500, wanted - i + 1)
  local u = {struct.unpack('<' .. string.rep('d', k), ARGV[11], (i - 1) * 8 + 1)}
  for j = 1, k do
    local off = math.floor(u[j] * size)  -- uniform_offsets
    if off > size - 1 then off = size - 1 end
    fields[i + j - 1] = slot_field((first + off) % cap)
  end
end
return {'MOVED', first, size, table.concat(spread('HMGET', rows, fields)), served}
"""
)

# Prioritized. ARGV[8] batch size, drawn by the caller from its tree at [9]
# epoch, [10] version; [11] a lease token, or '' for none; [12] the batches
# drawn (served as for uniform: as many as the limiter allows). As for
# uniform, the caller reads the drawn slots' rows with an HMGET right after,
# in the same MULTI/EXEC. Reply: {'OK', served} (the HMGET's rows are the
# batches) | {'STALE', changes} (the log entries after its
# version: apply, draw again) | {'RELOAD'} (too far behind, or a new table:
# load SNAPSHOT) | {'WAIT'} | {'SETTINGS', stored}.
#
# Lease: a STALE or RELOAD reply also gives the caller the lease (if free),
# which makes inserts and priority updates wait (at most LEASE_MS) until its
# next call, so that call finds the table at the version it drew from and is
# served. Without it, a sampler could redraw forever behind a stream of commits.
SAMPLE_PRIORITIZED = (
    PRELUDE
    + """
local batch = tonumber(ARGV[8])
local token = ARGV[11]
local holder = redis.call('GET', lease)
local held = holder and token ~= '' and holder == token
local function behind(reply)
  if token ~= '' and (not holder or held) then redis.call('SET', lease, token, 'PX', LEASE_MS) end
  return reply
end
local epoch = redis.call('HGET', meta, 'epoch')
local version = tonumber(redis.call('HGET', state, 'version'))
local mine = tonumber(ARGV[10])
if ARGV[9] ~= epoch or mine > version then return behind({'RELOAD'}) end
if mine < version then
  if version - mine > CHANGES_PER_REPLY then return behind({'RELOAD'}) end
  local missed = redis.call('XRANGE', changes, (mine + 1) .. '-1', '+')
  if #missed ~= version - mine then return behind({'RELOAD'}) end  -- trimmed away
  return behind({'STALE', missed})
end
if held then redis.call('DEL', lease) end
local end_key, size, ins, smp, del = counters()
if size == 0 or not can_sample(ins, smp, del, batch) then return {'WAIT'} end
local served = count_served(ins, smp, del, batch, tonumber(ARGV[12]))
redis.call('HINCRBY', state, 'samples', served * batch)
redis.call('HINCRBY', state, 'sample_batches', served)
return {'OK', served}
"""
)

# Everything a replica needs to build its sum tree from scratch.
# Reply: {'OK', epoch, version, end_key, size, leaves}.
SNAPSHOT = (
    PRELUDE
    + """
local v = redis.call('HMGET', state, 'version', 'end_key', 'size')
return {'OK', redis.call('HGET', meta, 'epoch'), v[1], v[2], v[3],
  redis.call('GETRANGE', leaves, 0, cap * 8 - 1)}
"""
)

# ARGV[8] keys (unique) and ARGV[9] their leaves (priority^alpha), packed
# float64. Keys no longer or not yet live are skipped.
# Reply: {'OK', updated, version, change...} (version 0: nothing changed) |
# {'LEASED'} (a sampler holds the lease: retry in a moment).
UPDATE_PRIORITIES = (
    PRELUDE
    + """
if redis.call('EXISTS', lease) == 1 then return {'LEASED'} end
local end_key, size = counters()
local first = end_key - size
local ks, ls = ARGV[8], ARGV[9]
local slots, values = {}, {}
local max_leaf = tonumber(redis.call('HGET', state, 'max_leaf'))
for i = 1, #ks / 8 do
  local key = struct.unpack('<d', ks, (i - 1) * 8 + 1)
  if key >= first and key < end_key then
    local packed = string.sub(ls, (i - 1) * 8 + 1, i * 8)
    local slot = key % cap
    redis.call('SETRANGE', leaves, slot * 8, packed)
    slots[#slots + 1] = struct.pack('<d', slot)
    values[#values + 1] = packed
    local leaf = struct.unpack('<d', packed)
    if leaf > max_leaf then max_leaf = leaf end
  end
end
if #slots == 0 then return {'OK', 0, 0} end
redis.call('HSET', state, 'max_leaf', max_leaf)
local change = {'kind', 'update', 'slots', table.concat(slots), 'leaves', table.concat(values)}
return {'OK', #slots, log_change(change), unpack(change)}
"""
)

# Read-only: rows of keys (ARGV[8], packed float64) that are live.
# Reply: {'OK', live keys packed, rows}.
GATHER = (
    PRELUDE
    + """
local end_key, size = counters()
local first = end_key - size
local ks = ARGV[8]
local keys, slots = {}, {}
for i = 1, #ks / 8 do
  local key = struct.unpack('<d', ks, (i - 1) * 8 + 1)
  if key >= first and key < end_key then
    keys[#keys + 1] = struct.pack('<d', key)
    slots[#slots + 1] = slot_field(key % cap)
  end
end
return {'OK', table.concat(keys), table.concat(spread('HMGET', rows, slots))}
"""
)
