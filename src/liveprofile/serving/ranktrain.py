"""The ranker learned in the pipeline: a round every ``ranker.every`` of event time.

A replay (``liveprofile replay``, ``quickstart``, :func:`liveprofile.replay`) hands each
committed batch to :class:`PipelineRanker`. At a round's start (event time t) it keeps the
candidates and their features, as the store serves them at t, of up to ``ranker.users`` users
active since the previous round (a seeded sample: the smallest hashes of their ids). From then
on it notes what those users buy (``ranker.kinds``). At the next round (t + ``ranker.every``)
the kept rows are scored against those purchases and learned from
(:func:`~liveprofile.serving.ranklearn.learn_rows`, test then train), the ranker is saved in
the store (:func:`~liveprofile.serving.learned.save_ranker`, its own small commit right after
the batch's) and the next round's rows are taken. Features are those at t and the purchases
come after t, so nothing a user bought leaks into what the ranker learns it from.

The rows wait in memory: a replay stopped between two rounds loses the open round, and the
resumed replay opens a new one at its first round time. ``ranker.every = "0s"`` (the default)
turns this off; ``liveprofile ranker train`` teaches a store's ranker from a file of later
purchases instead.

>>> import tempfile, pathlib, json, liveprofile
>>> from liveprofile.datasets.synthetic import SyntheticConfig, generate
>>> from liveprofile.serving.learned import load_ranker
>>> from liveprofile.store import open_store
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> events = generate(SyntheticConfig(users=40, items=40, days=6, seed=1))
>>> _ = (folder / "e.jsonl").write_text("".join(json.dumps(e) + "\\n" for e in events))
>>> config = liveprofile.PipelineConfig.from_toml(
...     '[ranker]\\nevery = "1d"\\nusers = 30\\n[run]\\nbatch_size = 200')
>>> summary = liveprofile.replay(folder / "e.jsonl", store=folder / "s.db", config=config,
...                              progress=False)
>>> summary["ranker"]["rounds"] > 1 and summary["ranker"]["users"] > 0
True
>>> store = open_store(str(folder / "s.db"))
>>> load_ranker(store, "convert").state.users == summary["ranker"]["users"]
True
>>> store.close()
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable
from typing import Any

from liveprofile.config import RankerConfig
from liveprofile.events.schema import Event
from liveprofile.events.sources import Batch
from liveprofile.serving.learned import Ranker, load_ranker, save_ranker
from liveprofile.serving.ranklearn import Rows, candidate_rows, learn_rows
from liveprofile.serving.recommend import Recommender, item_tasks
from liveprofile.store.base import Store

#: users remembered as active between two rounds, per user a round keeps
ACTIVE_PER_USER = 20


def _rank(user: str) -> bytes:
    return hashlib.blake2b(user.encode(), digest_size=8).digest()


class PipelineRanker:
    """Rounds of ranker learning over the batches a pipeline commits to ``store``.

    ``save(store, task, ranker)`` keeps a round's ranker (default
    :func:`~liveprofile.serving.learned.save_ranker`; the Kafka runners' checks that the
    saving worker still owns the partition that drives the rounds, see
    :mod:`liveprofile.kafka.rounds`).
    """

    def __init__(
        self,
        store: Store,
        config: RankerConfig,
        save: Callable[[Store, str, Ranker], None] = save_ranker,
    ) -> None:
        self.store = store
        self._save = save
        self.config = config
        self.every = config.every_s
        self.kinds = frozenset(config.kinds)
        self._next: float | None = None
        self._start = 0.0
        self._rows: Rows = {}
        self._task: str | None = None
        self._bought: dict[str, set[str]] = {}
        self._active: dict[str, bytes] = {}
        self.rounds = 0
        self.learned: dict[str, Any] = {"users": 0, "pairs": 0}

    def observe(self, batch: Batch) -> None:
        """Take in one committed batch: note purchases and active users, run a round when
        the batch's event time reached the next one."""
        latest = None
        rows, bought, kinds = self._rows, self._bought, self.kinds
        for e in batch.events:
            if latest is None or e.ts > latest:
                latest = e.ts
            user = e.user
            if user in rows and e.type in kinds and e.item_id and e.ts >= self._start:
                bought.setdefault(user, set()).add(e.item_id)
            if user not in self._active:
                self._active[user] = _rank(user)
        if len(self._active) > 2 * ACTIVE_PER_USER * self.config.users:
            kept = sorted(self._active.items(), key=lambda kv: kv[1])
            self._active = dict(kept[: ACTIVE_PER_USER * self.config.users])
        if latest is None:
            return
        if self._next is None:
            self._next = latest + self.every
        elif latest >= self._next:
            self._round(latest)

    def _round(self, now: float) -> None:
        rec = Recommender(self.store)
        if not item_tasks(rec.core.config):
            self._next = float("inf")  # nothing to recommend: no rounds
            return
        if self._rows and self._task is not None:
            ranker = load_ranker(self.store, self._task)
            out = learn_rows(ranker, self._rows, self._bought)
            if out["users"]:
                self._save(self.store, self._task, ranker)
                self.learned = {
                    "users": self.learned["users"] + out["users"],
                    "pairs": self.learned["pairs"] + out["pairs"],
                    "hit_rate": out["hit_rate"],
                    "ndcg": out["ndcg"],
                }
        self.rounds += 1
        self._task = rec.default_task(rec.checkpoint().seq).name
        sample = sample_users(self._active, self.config.users)
        self._rows = candidate_rows(rec, sample, self._task)
        self._bought, self._active = {}, {}
        self._start, self._next = now, now + self.every

    def summary(self) -> dict[str, Any]:
        """Rounds run, users and pairs learned from, the last round's prequential figures."""
        return {"rounds": self.rounds, "task": self._task, **self.learned}


def purchases_in(
    events: Iterable[Event], start: float, end: float, kinds: Collection[str]
) -> dict[str, set[str]]:
    """The items each user bought (events of ``kinds`` with an item) in ``(start, end]``.

    >>> from liveprofile.events.schema import Event
    >>> purchases_in([Event("e1", "u1", "purchase", 5.0, item_id="i1"),
    ...               Event("e2", "u1", "purchase", 50.0, item_id="i2")], 0.0, 9.0, ["purchase"])
    {'u1': {'i1'}}
    """
    out: dict[str, set[str]] = {}
    for e in events:
        if e.type in kinds and e.item_id and start < e.ts <= end:
            out.setdefault(e.user, set()).add(e.item_id)
    return out


def sample_users(users: Iterable[str], n: int | None) -> list[str]:
    """A seeded sample of ``n`` users (all when ``n`` is None), the same for the same users.

    >>> sample_users(["a", "b", "c"], None), len(sample_users(["a", "b", "c"], 2))
    (['a', 'b', 'c'], 2)
    """
    ordered = sorted(set(users))
    return ordered if n is None else sorted(sorted(ordered, key=_rank)[:n])


def pipeline_ranker(store: Store, config: RankerConfig) -> PipelineRanker | None:
    """The pipeline's ranker learning, or None when ``ranker.every`` is zero."""
    return PipelineRanker(store, config) if config.every_s > 0 else None
