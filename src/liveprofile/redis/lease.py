"""The writer lease of a Redis store (see :func:`liveprofile.store.lock.writer_lock`).

A lease key ``{prefix}:writer[:scope]`` is set with ``NX`` and an expiry, renewed by a thread of
the holder every third of the expiry (and taken again if it expired with nobody taking it
over); a holder that finds its lease taken by another stops. A restarted
worker with the same consumer name takes its own stale lease over at once; anyone else waits
for it to expire.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid

import redis

from liveprofile.errors import StoreLocked

# renew a lease this holder still owns; take it again if it expired with nobody taking it over
# (Redis was down, or this process stalled, for longer than the lease): a writer whose state
# fell behind meanwhile learns it from its store's fence or checkpoint before its next commit
_RENEW = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if not holder then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_DROP = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"  # noqa: E501


class Lease:
    """The writer lease of a Redis store: the key ``key`` set with ``NX`` and an expiry, renewed
    by a thread every third of it; ``lost`` once another holder has it."""

    def __init__(self, client: redis.Redis, key: str, owner: str, lease_s: float) -> None:
        self.client, self.key, self.lease_ms = client, key, int(lease_s * 1000)
        self.token = f"{owner} {socket.gethostname()}:{os.getpid()} {uuid.uuid4().hex[:8]}"
        self.lost = False
        if not client.set(key, self.token, nx=True, px=self.lease_ms):
            holder = client.get(key)
            text = holder.decode("utf-8", "replace") if isinstance(holder, bytes) else "unknown"
            if holder is None or text.split(" ", 1)[0] != owner:
                client.close()
                raise StoreLocked(
                    f"{key} is held by {text!r}: a second writer on one store is refused "
                    f"(the lease expires {lease_s:g} s after its holder stops)"
                )
            client.set(key, self.token, px=self.lease_ms)  # our own stale lease (a restart)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="liveprofile-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_ms / 3000):
            try:
                if not self.client.eval(_RENEW, 1, self.key, self.token, str(self.lease_ms)):
                    self.lost = True
                    return
            except redis.RedisError:
                continue  # unreachable for now: the runner notices and retries itself

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            if not self.lost:
                self.client.eval(_DROP, 1, self.key, self.token)
        except redis.RedisError:
            pass  # the lease expires by itself
        finally:
            self.client.close()
