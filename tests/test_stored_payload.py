"""The per-commit blobs written faster store the same bytes as before: the prequential metrics
(windows unchanged since the last commit not encoded again) and the pending logs."""

from __future__ import annotations

import msgspec
import numpy as np

from liveprofile.learn import metrics
from liveprofile.learn.metrics import Prequential


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
