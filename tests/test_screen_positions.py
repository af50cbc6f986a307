"""A screened event's dead letter carries the event's own place in the source, not the batch's
offset: the entry of a Redis stream (keyed by it in the store), the line of a JSON Lines file.

The batches mix events that pass, records that do not parse, and events the screen refuses
(a value out of bounds, a time in the far future, a known user's id given as an anonymous id).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import msgspec
import redis

from liveprofile.config import PipelineConfig
from liveprofile.engine.local import LocalRunner
from liveprofile.events.deadletter import DeadLetter, read_dead_letters
from liveprofile.events.schema import Event
from liveprofile.events.sources import Batch, JsonlSource
from liveprofile.redis.store import RedisStore
from liveprofile.redis.streams import entry_offset
from liveprofile.redis.worker import RedisWorker, WorkerOptions
from liveprofile.store.memory import MemoryStore

REDIS = "redis://127.0.0.1:6379/0"
TS = 1_700_000_000


def _line(event_id: str, user: str, *, ts: float = TS, **extra: object) -> bytes:
    return msgspec.json.encode({"event_id": event_id, "user_id": user, "type": "view",
                                "ts": ts, **extra})  # fmt: skip


#: (record, why it is refused: None when it passes)
MIXED: list[tuple[bytes, str | None]] = [
    (_line("e1", "ann"), None),
    (_line("e2", "ann", value=5e12), "events.max_value"),
    (b"{not json", "not valid JSON"),
    (_line("e3", "bob", ts=TS + 10), None),
    (_line("e4", "bob", ts=4.1e9), "events.max_future"),
    (_line("e5", "cy", ts=TS + 20), None),
    (_line("e6", "dee", ts=TS + 30, anonymous_id="ann"), "is a known user"),
    (_line("e7", "cy", ts=TS + 40, value=-3e10), "events.max_value"),
    (_line("e8", "ann", ts=TS + 50), None),
]


def test_redis_worker_dead_letters_carry_their_own_entry() -> None:
    prefix = f"pos-{uuid.uuid4().hex[:8]}"
    stream = f"{prefix}:events:0"
    client = redis.Redis.from_url(REDIS)
    store = RedisStore(REDIS, prefix=prefix)
    try:
        ids = [client.xadd(stream, {"e": raw}) for raw, _ in MIXED]
        worker = RedisWorker(
            PipelineConfig(), store, client, WorkerOptions(prefix, [0], batch_size=100, block_ms=50)
        )
        stats = worker.run(max_idle_polls=1)
        assert (stats.batches, stats.events, stats.dead_letters) == (1, 4, 5)
        rows = client.hgetall(f"{prefix}:deadletter")
        letters = {k.decode(): msgspec.json.decode(v, type=DeadLetter) for k, v in rows.items()}
        expected = {
            f"{stream}:{entry_id.decode()}": why
            for entry_id, (_, why) in zip(ids, MIXED, strict=True)
            if why is not None
        }
        assert sorted(letters) == sorted(expected)
        last = entry_offset(ids[-1])
        for key, letter in letters.items():
            entry_id = key.rsplit(":", 1)[1]
            assert letter.offset == entry_offset(entry_id) != last
            assert expected[key] in letter.reason, (key, letter.reason)
            assert letter.source == stream
    finally:
        store.close()
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_jsonl_dead_letters_carry_their_own_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [raw for raw, _ in MIXED]
    path.write_bytes(b"\n".join(lines) + b"\n")
    starts = [sum(len(x) + 1 for x in lines[:k]) for k in range(len(lines))]
    runner = LocalRunner(PipelineConfig(), MemoryStore(), tmp_path / "dead.jsonl")
    stats = runner.run(JsonlSource(path))
    runner.close()
    assert (stats.events, stats.dead_letters) == (4, 5)
    letters = read_dead_letters(tmp_path / "dead.jsonl")
    refused = [(start, why) for start, (_, why) in zip(starts, MIXED, strict=True) if why]
    assert sorted(d.offset for d in letters) == [start for start, _ in refused]
    by_offset = {d.offset: d for d in letters}
    for start, why in refused:
        assert why in by_offset[start].reason
        line = lines[starts.index(start)]
        if line.startswith(b"{not"):  # a record that does not parse: as it was
            assert by_offset[start].raw.encode() == line
        else:  # a screened event: as parsed
            event_id = msgspec.json.decode(line)["event_id"]
            assert msgspec.json.decode(by_offset[start].raw)["event_id"] == event_id


def test_a_batch_without_positions_falls_back_to_its_offset() -> None:
    batch = Batch([Event("e1", "u1", "view", 1.0)], offset=42)
    assert batch.position(0) == 42
    batch.add(Event("e2", "u1", "view", 2.0), 7)  # positions must cover every event
    assert batch.position(1) == 42
    both = Batch(offset=9)
    both.add(Event("e1", "u1", "view", 1.0), 3)
    both.add(Event("e2", "u1", "view", 2.0), 5)
    assert (both.position(0), both.position(1)) == (3, 5)
