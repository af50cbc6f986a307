"""The per-commit blobs written faster store the same as before: the prequential metrics the same
bytes (windows unchanged since the last commit not encoded again), the pending logs the same body
compressed at a faster level, and rows compressed at the former level still load."""

from __future__ import annotations

import msgspec
import numpy as np

from liveprofile.learn import metrics
from liveprofile.learn.metrics import Prequential
from liveprofile.learn.tasks import (
    PENDING_SCHEMA,
    Pending,
    PendingColumns,
    PendingLog,
    decode_logs,
    encode_logs,
)
from liveprofile.store.codec import VersionedCodec, unpack


def _encoded_afresh(m: Prequential) -> bytes:
    """The metrics' blob as encoded before windows' bytes were kept: every window each time."""
    counts = metrics._Counts
    state = metrics._Stored(
        window=m.window,
        all=counts(m.pos.tolist(), m.neg.tolist(), m.logloss, m.p_sum),
        windows={
            k: counts(pos.tolist(), neg.tolist(), extra[0], extra[1])
            for k, (pos, neg, extra) in m._windows.items()
        },
        version=metrics.METRICS_VERSION,
        drift=m.drift.to_state(),
    )
    return msgspec.msgpack.encode(state)


def test_metrics_bytes_equal_a_fresh_encoding_after_every_kind_of_change() -> None:
    rng = np.random.default_rng(5)
    m, other = Prequential(window=100.0), Prequential(window=100.0)
    blobs = set()
    for batch in range(6):  # each batch reaches a new window and revisits older ones
        ts = rng.uniform(0.0, 100.0 * (batch + 1), 400)
        p, y = rng.uniform(0.01, 0.99, 400), rng.uniform(size=400) < 0.3
        m.record_many(p, y, ts)
        assert m.to_bytes() == _encoded_afresh(m)
        m.record(0.7, True, 50.0)  # one old window only
        assert m.to_bytes() == _encoded_afresh(m)
        blobs.add(m.to_bytes())
    other.record_many(np.array([0.2, 0.9]), np.array([False, True]), np.array([10.0, 950.0]))
    m.add(other)  # an old window and a new one
    assert m.to_bytes() == _encoded_afresh(m)
    assert len(blobs) == 6  # the kept bytes did change with the counts
    back = Prequential.from_bytes(m.to_bytes())
    assert back.windows() == m.windows() and back.summary() == m.summary()
    assert back.to_bytes() == m.to_bytes()


def test_pending_logs_store_the_same_body_and_rows_compressed_at_level_1_still_load() -> None:
    rng = np.random.default_rng(9)
    created = [
        Pending(
            f"u{k % 40}",
            f"k{k % 7}",
            f"i{k}" if k % 5 else None,
            float(k),
            float(k) + 86400.0,
            rng.integers(0, 2**20, 30).astype(np.int64).tobytes(),
            np.where(rng.uniform(size=30) < 0.7, 1.0, rng.uniform(size=30)).tobytes(),
            float(rng.uniform()),
            bool(k % 3 == 0),
        )
        for k in range(500)
    ]
    log = PendingLog(created, [(f"u{k}", f"k{k % 7}", float(k)) for k in range(30)])
    blob = encode_logs({"t": log})
    columns = {"t": log.columns()}
    before = VersionedCodec(
        dict[str, PendingColumns], schema=PENDING_SCHEMA, what="pending log", compress="zstd"
    ).encode(columns)  # as written at level 1
    assert blob[0] == before[0] == PENDING_SCHEMA
    assert blob != before  # compressed differently ...
    assert unpack(blob[1:]) == unpack(before[1:])  # ... the same body
    assert decode_logs(before) == decode_logs(blob) == {"t": log}
