"""Top-k items for a user: candidates ranked by a task's online model with the live profile.

Each candidate is scored exactly as ``GET /v1/score`` scores one (user, item): the features the
pipeline builds for an exposure of that item to the user now (the profile, the item statistics,
the task's outcome rates), fed to the task's online model. The features are built by the
compiled step's own feature functions on one row of the profile and a row per candidate
(:mod:`liveprofile.engine.exposure`), the code that built the examples the model learned from,
so what it scores with cannot drift from what it learned. All candidates are built in one call
and go to the model in one batch (:func:`~liveprofile.learn.base.run_ops`). The reason for each
of the top k is its own features with the largest contributions to the logit (weight x value,
for the linear learners); the features every candidate has alike (the user's, the time's) cannot
tell items apart, so they are listed once, as ``shared``. An item's reason and the shared
features, taken in full, add up to the logit of its score.

Candidates come from the request, or else from the items of the user's newest events and the
popular items of the user's strongest interests that are item categories
(:class:`~liveprofile.profile.popular.PopularIndex`, rebuilt when the store's checkpoint moves
on, at most every :data:`POPULAR_EVERY_S` on a store kept per partition), or, for a user with
none, the most popular items overall. They are ordered by the ranker
the store holds (:mod:`liveprofile.serving.learned`), by the fixed blend or by the model alone.

>>> import tempfile, pathlib, liveprofile
>>> from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
>>> from liveprofile.store import open_store
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = write_jsonl(folder / "events.jsonl", SyntheticConfig(users=20, items=30, days=3, seed=1))
>>> _ = liveprofile.replay(folder / "events.jsonl", store=folder / "shop.db", progress=False)
>>> store = open_store(str(folder / "shop.db"), read_only=True)
>>> out = Recommender(store).recommend("u00017", k=3)
>>> out["task"], out["candidates"], len(out["items"])
('convert', 'interests', 3)
>>> first, second = out["items"][:2]
>>> first["score"] >= second["score"], len(first["reason"])
(True, 5)
>>> store.close()
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from liveprofile.config import PipelineConfig, TaskConfig
from liveprofile.engine.core import Core
from liveprofile.engine.exposure import ExposureFeatures, Exposures
from liveprofile.errors import InvalidRequest, ProfileNotFound, TaskNotFound
from liveprofile.events.schema import Event
from liveprofile.learn.base import Learner, run_ops
from liveprofile.learn.metrics import Prequential
from liveprofile.learn.stored import StoredModels
from liveprofile.profile.items import ItemStats, decode_item
from liveprofile.profile.popular import PopularIndex
from liveprofile.profile.state import Profile, decode_profile
from liveprofile.serving import MAX_CANDIDATES, ranking
from liveprofile.serving.learned import FEATURES, feature_rows, load_ranker, recent_items
from liveprofile.serving.partitions import PartitionedView
from liveprofile.serving.scoring import feature_weights, top_features
from liveprofile.store import Store
from liveprofile.store.layout import (
    ITEMS,
    PROFILES,
    Checkpoint,
    metrics_meta,
    read_checkpoint,
    stored_config,
)

#: popular items kept per category in the index, and taken per interest as candidates
POPULAR_PER_CATEGORY = 200
#: how many of the user's strongest interest categories give candidates
INTERESTS = 3
#: the most popular items overall, added to the interests' candidates
POPULAR_OVERALL = 200
#: on a store kept per partition, whose checkpoint moves with every worker's commit, the
#: popular-items index (a merged scan of every partition's items) is rebuilt at most this often
POPULAR_EVERY_S = 5.0

F64 = npt.NDArray[np.float64]


def find_task(config: PipelineConfig, name: str) -> TaskConfig:
    """The task called ``name`` in the store's config, or an error naming the ones it has."""
    for task in config.tasks:
        if task.name == name:
            return task
    known = ", ".join(t.name for t in config.tasks)
    raise TaskNotFound(f"no task {name!r}: this store has {known}")


def item_tasks(config: PipelineConfig) -> list[TaskConfig]:
    """Tasks whose examples are item exposures labelled by what the user did with that item:
    immediate labels (e.g. ``like``: rating >= 4) and delayed ones keyed by item (``convert``).
    A task keyed by category (``repurchase``) scores every item of a category alike.

    >>> [t.name for t in item_tasks(PipelineConfig())]
    ['like', 'convert']
    """
    return [
        t
        for t in config.tasks
        if (t.label.kind != "delayed" or t.label.key == "item") and not t.regression
    ]


def scoring_time(checkpoint: Checkpoint, p: Profile) -> float:
    """When a score is computed for: the store's watermark (the user's last event before any)."""
    return checkpoint.watermark if math.isfinite(checkpoint.watermark) else p.last_ts


def exposure(user: str, task: TaskConfig, item: str, stats: ItemStats | None, ts: float) -> Event:
    """The event a score stands for: ``item`` shown to ``user`` at ``ts`` as the task's event."""
    category = None if stats is None else stats.category
    return Event("score", user, task.on[0], ts, item_id=item, category=category)


def exposures(
    features: ExposureFeatures,
    task: TaskConfig,
    user: str,
    p: Profile,
    items: Sequence[str],
    stats: Sequence[ItemStats | None],
    ts: float,
) -> Exposures:
    """The features the pipeline builds for :func:`exposure` of each of ``items`` as examples
    of ``task``, by the compiled step's own feature functions
    (:class:`~liveprofile.engine.exposure.ExposureFeatures`): a score is computed from what the
    model learned from, not from a second implementation of it."""
    return features.build(task, user, p, items, stats, ts)


def merged(idx: Sequence[int], val: Sequence[float]) -> dict[int, float]:
    """The example as a River-style dict; colliding indices add up, as in the kernel.

    >>> merged([3, 1, 3], [1.0, 2.0, 0.5])
    {3: 1.5, 1: 2.0}
    """
    x: dict[int, float] = {}
    for i, v in zip(idx, val, strict=True):
        x[i] = x.get(i, 0.0) + v
    return x


def _split(idx: list[int], val: list[float], common: Counter[tuple[int, float]]) -> list[bool]:
    """Which features are the item's own (True), not one every candidate has alike (False).

    >>> _split([1, 2, 2, 3], [1.0, 1.0, 1.0, 0.5], Counter({(1, 1.0): 1, (2, 1.0): 1}))
    [False, False, True, True]
    """
    left = Counter(common)
    out = []
    for pair in zip(idx, val, strict=True):
        if left[pair] > 0:
            left[pair] -= 1
            out.append(False)
        else:
            out.append(True)
    return out


class Recommender:
    """Recommendations from one open store (SQLite or Redis alike: only the store interface).

    ``learner(task, seq)`` gives the task's model at checkpoint ``seq``; by default models are
    loaded from the store and kept until the checkpoint moves on. The popular-items index and
    the default task are cached the same way, the index for at least ``popular_every_s``
    seconds (default: :data:`POPULAR_EVERY_S` on a store kept per partition, else 0).
    """

    def __init__(
        self,
        store: Store,
        core: Core | None = None,
        learner: Callable[[str, int], Learner] | None = None,
        per_category: int = POPULAR_PER_CATEGORY,
        popular_every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._core = core
        self._learner = learner or self._load_learner
        self.per_category = per_category
        self._models = StoredModels(store)
        #: (checkpoint seq, built at, index)
        self._popular: tuple[int, float, PopularIndex] | None = None
        self._popular_every_s = popular_every_s
        self._clock = clock
        self._default: tuple[int, TaskConfig] | None = None
        self._features: ExposureFeatures | None = None

    @property
    def core(self) -> Core:
        if self._core is None:
            self._core = Core(stored_config(self.store))
        return self._core

    @property
    def features(self) -> ExposureFeatures:
        """Builds the candidates' features on rows, with the compiled step's functions."""
        if self._features is None:
            self._features = ExposureFeatures(self.core)
        return self._features

    def checkpoint(self) -> Checkpoint:
        return read_checkpoint(self.store)

    def _load_learner(self, task: str, seq: int) -> Learner:
        learner = self._models.get(task, seq)
        if learner is None:
            raise TaskNotFound(f"no model for task {task!r} in the store yet: replay events first")
        return learner

    @property
    def popular_every_s(self) -> float:
        """Least seconds between two rebuilds of the popular-items index."""
        if self._popular_every_s is None:
            store = self.store
            partitioned = isinstance(store, PartitionedView) and store.partitioned()
            self._popular_every_s = POPULAR_EVERY_S if partitioned else 0.0
        return self._popular_every_s

    def popular(self, seq: int) -> PopularIndex:
        """The popular-items index, rebuilt from a full scan of the items when ``seq`` moves
        (and the last build is at least :attr:`popular_every_s` old)."""
        now = self._clock()
        cached = self._popular
        if cached is None or (cached[0] != seq and now - cached[1] >= self.popular_every_s):
            h = self.core.updater.h_counters
            rows = ((key, decode_item(blob, key)) for key, blob in self.store.scan(ITEMS))
            cached = self._popular = (seq, now, PopularIndex.build(rows, h, self.per_category))
        return cached[2]

    def default_task(self, seq: int) -> TaskConfig:
        """The first item task (:func:`item_tasks`) that has learned from this store's events,
        else the first item task: a ``like`` model in a store of views and purchases has never
        seen an example and would rank by nothing."""
        if self._default is not None and self._default[0] == seq:
            return self._default[1]
        tasks = item_tasks(self.core.config)
        if not tasks:
            raise TaskNotFound(
                "this store's config has no task whose examples are items: name a task"
            )
        chosen = tasks[0]
        for task in tasks:
            blob = self.store.get_meta(metrics_meta(task.name))
            if blob is not None and Prequential.from_bytes(blob).n > 0:
                chosen = task
                break
        self._default = (seq, chosen)
        return chosen

    def recommend(
        self,
        user: str,
        k: int = 10,
        candidates: Sequence[str] | None = None,
        task: str | None = None,
        top: int = 5,
        interests: int = INTERESTS,
        rank: str = "learned",
        overall: int = POPULAR_OVERALL,
        recent: bool = True,
    ) -> dict[str, Any]:
        """The ``k`` best candidates for ``user``, each with its ``top`` own features as the
        reason, and the ``top`` features all candidates share. ``rank="learned"`` orders by the
        weights the store's ranker learned from what users bought next
        (:mod:`liveprofile.serving.learned`; the blend's weights until it has learned),
        ``"blend"`` by the task's P(y=1) blended with popularity, interest and the user's
        history of the item (:mod:`liveprofile.serving.ranking`), ``"model"`` by P(y=1) alone.
        Candidates default to the items of the user's newest events, the popular items of the
        user's ``interests`` strongest interest categories and the ``overall`` most popular.
        """
        if not 1 <= k <= MAX_CANDIDATES:
            raise InvalidRequest(f"k must be within 1..{MAX_CANDIDATES}, got {k}")
        if rank not in ranking.RANKS:
            raise InvalidRequest(f"rank must be one of {', '.join(ranking.RANKS)}, got {rank!r}")
        ckpt = self.checkpoint()
        core = self.core
        spec = self.default_task(ckpt.seq) if task is None else find_task(core.config, task)
        (blob,) = self.store.read(PROFILES, [user])
        if blob is None:
            raise ProfileNotFound(f"no profile for user {user!r}")
        p = decode_profile(blob, user)
        if candidates is not None:
            items = list(dict.fromkeys(candidates))
            if not items or len(items) > MAX_CANDIDATES:
                raise InvalidRequest(
                    f"give 1 to {MAX_CANDIDATES} candidate items (got {len(items)} distinct), "
                    "or none to take the popular items of the user's interests"
                )
            source = "request"
        else:
            items, source = self._from_interests(p, ckpt.seq, interests, overall, recent)
        learner = self._learner(spec.name, ckpt.seq)
        ts = scoring_time(ckpt, p)
        stats = [
            None if b is None else decode_item(b, i)
            for i, b in zip(items, self.store.read(ITEMS, items), strict=True)
        ]
        built = exposures(self.features, spec, user, p, items, stats, ts)
        common: Counter[tuple[int, float]] = Counter()
        if top > 0 and len(items) > 1:  # the features every candidate shares are not a reason
            common = built.shared()  # (one candidate: nothing to tell it apart from)
        scores = run_ops(learner, built.predict_ops()).tolist() if items else []
        h = core.updater.h_counters
        blended: list[dict[str, float]] = []
        values: list[dict[str, float]] = []
        keys = scores
        if rank == "learned":
            ranker = load_ranker(self.store, spec.name)
            rows = feature_rows(p, spec.name, items, stats, scores, ts, h)
            keys = ranker.score(rows).tolist()
            blended = [ranker.contributions(row) for row in rows]
            values = [dict(zip(FEATURES, row.tolist(), strict=True)) for row in rows]
        elif rank == "blend":
            cats = [None if it is None else it.category for it in stats]
            inputs = [
                (
                    scores[j],
                    ranking.popularity_now(stats[j], ts, h),
                    ranking.interest_share(p, cats[j]),
                    ranking.history(p, spec.name, items[j]),
                )
                for j in range(len(items))
            ]
            blended = [ranking.factors(*x) for x in inputs]
            keys = [ranking.blend(*x) for x in inputs]
        order = sorted(range(len(items)), key=lambda j: (-keys[j], items[j]))[:k]
        ranked: list[dict[str, Any]] = []
        shared: list[list[Any]] | None = None
        for j in order:
            event = exposure(user, spec, items[j], stats[j], ts)
            reason: list[list[Any]] = []
            if top > 0:  # explain (top=0: ranking alone, as a ranker round reads it)
                idx, val, names = built.explained(j)
                weights = feature_weights(learner, idx)
                own = _split(idx, val, common)
                pick = [n for n, o in enumerate(own) if o]
                reason = top_features(
                    [names[n] for n in pick],
                    [val[n] for n in pick],
                    None if weights is None else weights[pick],
                    top,
                )
            if top > 0 and shared is None:
                rest = [n for n, o in enumerate(own) if not o]
                w = None if weights is None else weights[rest]
                shared = top_features([names[n] for n in rest], [val[n] for n in rest], w, top)
            row = {"item": items[j], "score": scores[j], "category": event.category}
            if blended:
                row["rank_score"] = keys[j]
                row["ranking"] = blended[j]
            if values:
                row["features"] = values[j]
            ranked.append({**row, "reason": reason})
        return {
            "user": user,
            "task": spec.name,
            "candidates": source,
            "considered": len(items),
            "rank": rank,
            "items": ranked,
            "shared": shared or [],
        }

    def _from_interests(
        self,
        p: Profile,
        seq: int,
        interests: int,
        overall: int = POPULAR_OVERALL,
        recent: bool = True,
    ) -> tuple[list[str], str]:
        index = self.popular(seq)
        strongest = sorted(p.interests, key=lambda t: -p.interests[t])
        known = [t for t in strongest if t in index.by_category][:interests]
        items = (recent_items(p) if recent else []) + index.for_interests(known, self.per_category)
        if items:
            items = list(dict.fromkeys(items + index.overall[: max(overall, 0)]))
            return items[:MAX_CANDIDATES], "interests"
        return index.overall[:MAX_CANDIDATES], "popular"
