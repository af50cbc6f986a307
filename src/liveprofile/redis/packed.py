"""Reading and merging a shared model's coordinates in Redis, passed as packed arrays.

A batch touches some thousands of a model's coordinates. Sent one hash field and one value at a
time, their names and values are built, packed and parsed by Python once per coordinate, which
cost more than the batch's learning itself. Here a batch passes the coordinates' indices as one
string of little-endian uint32s and their values as one string of little-endian float64s, and a
Lua script, run by Redis next to the data, names the rows (lowercase hex,
:func:`~liveprofile.store.layout.coordinate_field`), reads them with ``HMGET`` and writes them with
``HSET``. A row holds all the learner's float64s of its coordinate (``width`` bytes), so there is
one row per coordinate whatever the learner keeps.

>>> import numpy as np, redis
>>> client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
>>> key, idx = "liveprofile-doctest:packed", np.array([3, 1000], "<u4").tobytes()
>>> _ = client.delete(key)
>>> before = read_rows(client, key, idx, 16)
>>> np.frombuffer(before, "<f8").tolist()
[0.0, 0.0, 0.0, 0.0]
>>> after = np.array([1.0, 2.0, 0.5, 0.0]).tobytes()
>>> merge_rows(client, key, idx, before, after, 16)
2
>>> client.hmget(key, ["3", "3e8"]) == [after[:16], after[16:]]
True
>>> _ = client.delete(key)
>>> client.close()
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Lua helper: the hex row names of the ``count`` indices packed in ``packed`` from index
#: ``start`` (1-based), in a table
_FIELDS = """
local function fields(packed, start, count)
  local names = {}
  for j = 1, count do
    names[j] = string.format('%x', (struct.unpack('<I4', packed, 4 * (start + j - 1) - 3)))
  end
  return names
end
"""

#: rows per ``HMGET``/``HSET`` inside a script (Lua's ``unpack`` takes about 8,000 values)
CHUNK = 2000

#: KEYS[1]: the model's hash; ARGV[1]: packed uint32 indices; ARGV[2]: bytes per row. Returns
#: the rows' values, concatenated, zeros for a row not written yet.
READ_SCRIPT = (
    _FIELDS
    + f"""
local key, packed, width = KEYS[1], ARGV[1], tonumber(ARGV[2])
local zero = string.rep('\\0', width)
local n = #packed / 4
local out = {{}}
for start = 1, n, {CHUNK} do
  local count = math.min(n - start + 1, {CHUNK})
  local values = redis.call('HMGET', key, unpack(fields(packed, start, count)))
  for j = 1, count do
    out[start + j - 1] = values[j] or zero
  end
end
return table.concat(out)
"""
)

#: KEYS[1]: the model's hash; ARGV[1]: packed uint32 indices of the rows a batch changed;
#: ARGV[2] and ARGV[3]: their float64s as the batch read them and after the batch; ARGV[4]:
#: bytes per row. A row still as read gets the batch's values exactly; in a row another worker
#: changed meanwhile, each float64 that moved gets the batch's difference added. Returns the
#: rows merged.
MERGE_SCRIPT = (
    _FIELDS
    + f"""
local key, packed, before, after = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local width = tonumber(ARGV[4])
local zero = string.rep('\\0', width)
local floats = width / 8
local fmt = '<' .. string.rep('d', floats)
local n = #packed / 4
for start = 1, n, {CHUNK} do
  local count = math.min(n - start + 1, {CHUNK})
  local names = fields(packed, start, count)
  local current = redis.call('HMGET', key, unpack(names))
  local args = {{}}
  for j = 1, count do
    local o = (start + j - 2) * width
    local b = string.sub(before, o + 1, o + width)
    local a = string.sub(after, o + 1, o + width)
    local c = current[j] or zero
    local v = a
    if c ~= b then
      local cs = {{struct.unpack(fmt, c)}}
      local bs = {{struct.unpack(fmt, b)}}
      local as = {{struct.unpack(fmt, a)}}
      for k = 1, floats do
        if cs[k] ~= bs[k] then
          as[k] = cs[k] + (as[k] - bs[k])
        end
      end
      v = struct.pack(fmt, unpack(as, 1, floats))
    end
    args[2 * j - 1] = names[j]
    args[2 * j] = v
  end
  redis.call('HSET', key, unpack(args))
end
return n
"""
)


def read_rows(client: Any, key: str, indices: bytes, width: int) -> bytes:
    """The rows of ``indices`` (packed uint32s) of hash ``key``, ``width`` bytes each, in one
    round trip (zeros for rows not written yet)."""
    if not indices:
        return b""
    return bytes(client.eval(READ_SCRIPT, 1, key, indices, width))


def merge_rows(
    client: Any, key: str, indices: bytes, before: bytes, after: bytes, width: int
) -> Any:
    """Merge a batch's changed rows into hash ``key`` (see :data:`MERGE_SCRIPT`); ``client``
    may be a pipeline, whose reply then comes with the others."""
    return client.eval(MERGE_SCRIPT, 1, key, indices, before, after, width)


def merge_locally(
    blob: bytes, indices: bytes, width: int, merges: list[tuple[bytes, bytes, bytes]]
) -> bytes:
    """Rows of ``indices`` read as ``blob`` (``width`` bytes each) after the ``merges``
    (indices, before, after) of a commit not landed yet, made as
    :data:`MERGE_SCRIPT` makes them: a row still as its merge read
    it gets the merge's values exactly; in another, each float64 that moved gets the
    difference added.

    >>> import numpy as np
    >>> def f(*x): return np.array(x, dtype="<f8").tobytes()
    >>> idx = np.array([1, 2, 3], dtype="<u4").tobytes()
    >>> merge = (np.array([3, 2], dtype="<u4").tobytes(), f(0.5, 1.0), f(0.75, 4.0))
    >>> np.frombuffer(merge_locally(f(9.0, 1.0, 1.5), idx, 8, [merge])).tolist()
    [9.0, 4.0, 1.75]
    """
    floats = width // 8
    rows = np.frombuffer(blob, dtype="<f8").reshape(-1, floats).copy()
    wanted = np.frombuffer(indices, dtype="<u4")
    for idx, before, after in merges:
        at = np.frombuffer(idx, dtype="<u4")
        _, mine, theirs = np.intersect1d(wanted, at, assume_unique=True, return_indices=True)
        c = rows[mine]
        b = np.frombuffer(before, dtype="<f8").reshape(-1, floats)[theirs]
        a = np.frombuffer(after, dtype="<f8").reshape(-1, floats)[theirs]
        same = (c.view("<u8") == b.view("<u8")).all(axis=1)
        rows[mine] = np.where(same[:, None] | (c == b), a, c + (a - b))
    return rows.tobytes()
