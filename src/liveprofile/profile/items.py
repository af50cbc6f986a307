"""Per-item statistics that feed the features: popularity, mean value, outcome rates per task.

>>> stats = ItemStats(anchor=0.0)
>>> stats.record_outcome("like", True); stats.record_outcome("like", False)
>>> stats.outcome_rate("like", prior=0.5, strength=2.0)
0.5
"""

from __future__ import annotations

import msgspec

from liveprofile.profile.decay import rebase_factor
from liveprofile.store.codec import VersionedCodec

ITEM_SCHEMA = 1


def shrunk_rate(positives: int, examples: int, prior: float, strength: float) -> float:
    """A positive rate shrunk toward ``prior`` by ``strength`` pseudo-examples."""
    return (positives + prior * strength) / (examples + strength)


class ItemStats(msgspec.Struct, array_like=True, gc=False):
    """Running statistics of one item, all from events already seen (never the current one)."""

    anchor: float
    last_ts: float = float("-inf")
    n: int = 0
    popularity: float = 0.0  # forward-decayed event count, see liveprofile.profile.decay
    value_sum: float = 0.0
    value_n: int = 0
    positives: dict[str, int] = {}
    examples: dict[str, int] = {}
    #: the item's category as events gave it first (so an item can be scored by id alone)
    category: str | None = None

    def record_outcome(self, task: str, positive: bool) -> None:
        self.examples[task] = self.examples.get(task, 0) + 1
        if positive:
            self.positives[task] = self.positives.get(task, 0) + 1

    def outcome_rate(self, task: str, prior: float, strength: float) -> float:
        """Positive rate for ``task``, shrunk toward ``prior`` with ``strength`` pseudo-examples."""
        return shrunk_rate(self.positives.get(task, 0), self.examples.get(task, 0), prior, strength)


_codec = VersionedCodec(ItemStats, schema=ITEM_SCHEMA, what="item record")
encode_item = _codec.encode
decode_item = _codec.decode


def merge_items(parts: list[ItemStats], half_life: float) -> ItemStats:
    """One item's statistics of several partitions as one: counts, sums and outcomes add up,
    the decayed popularity is moved to the latest landmark (``half_life``: the counters')
    and added; the category is the first partition's that has one.

    >>> a = ItemStats(anchor=0.0, n=2, popularity=4.0, category="tea")
    >>> b = ItemStats(anchor=10.0, n=1, popularity=1.0, examples={"like": 1})
    >>> m = merge_items([a, b], half_life=10.0)
    >>> m.anchor, m.n, m.popularity, m.category, m.examples
    (10.0, 3, 3.0, 'tea', {'like': 1})
    """
    anchor = max(p.anchor for p in parts)
    out = ItemStats(anchor=anchor, positives={}, examples={})
    for p in parts:
        out.last_ts = max(out.last_ts, p.last_ts)
        out.n += p.n
        out.popularity += p.popularity * rebase_factor(anchor, p.anchor, half_life)
        out.value_sum += p.value_sum
        out.value_n += p.value_n
        for task, k in p.positives.items():
            out.positives[task] = out.positives.get(task, 0) + k
        for task, k in p.examples.items():
            out.examples[task] = out.examples.get(task, 0) + k
        if out.category is None:
            out.category = p.category
    return out
