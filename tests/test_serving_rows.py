"""Serving builds its features with the step's feature functions on one user row and the
candidates' item rows (``liveprofile.engine.exposure``); the features and the scores are those
of the example the step itself makes when the exposure arrives as an event (learned at once, or
opened as a pending example), and every name hashes to its index, over random pipelines
(immediate, delayed and regression tasks keyed by item, category and user; behaviour features
with and without the value; crosses and time of day on and off) replayed from messy streams,
for random users (and none), known and unknown items and scoring times before, at and after the
users' last events. Also under ``LIVEPROFILE_NO_JIT=1``.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_compiled import TASKS, chunks, config, messed_up, run, synthetic
from test_compiled_regression import spend, with_values

from liveprofile.config import FeatureConfig, LabelConfig, ProfileConfig, TaskConfig
from liveprofile.engine.core import Core
from liveprofile.engine.exposure import ExposureFeatures
from liveprofile.engine.state import PipelineState
from liveprofile.features.buckets import cross_index
from liveprofile.features.hashing import FeatureBuilder
from liveprofile.learn.base import PREDICT, OpBatch, run_ops
from liveprofile.learn.stored import StoredModels
from liveprofile.learn.tasks import PendingColumns
from liveprofile.profile.items import ItemStats, decode_item
from liveprofile.profile.state import Profile, decode_profile
from liveprofile.serving.recommend import Recommender, exposure, merged, scoring_time
from liveprofile.store import Store
from liveprofile.store.layout import read_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
HERE = Path(__file__).parent

#: every kind of task: immediate (value, type), delayed by item, category and user, and
#: regression tasks keyed by each
ALL_TASKS = [
    *TASKS,
    TaskConfig(
        "returns",
        on=["view", "cart"],
        label=LabelConfig(kind="delayed", conversion=["purchase"], key="user", window="3d"),
    ),
    spend(key="user"),
    spend(key="category", name="spend_cat", on=("view",)),
    spend(key="item", name="spend_item", on=("cart", "view")),
]


def replayed(seed: int, features: FeatureConfig, profile: ProfileConfig) -> tuple[Store, Core]:
    """A store filled by the compiled step from a messy stream with values, and its core."""
    events = with_values(messed_up(synthetic(seed=seed, users=30, days=4), seed), seed)
    cfg = config(tasks=ALL_TASKS, features=features, profile=profile)
    return run(cfg, chunks(events, 400))


def stored(store: Store) -> tuple[dict[str, Profile], dict[str, ItemStats]]:
    profiles = {key: decode_profile(blob, key) for key, blob in store.scan("profile")}
    items = {key: decode_item(blob, key) for key, blob in store.scan("item")}
    return profiles, items


def reference(
    store: Store,
    core: Core,
    task: TaskConfig,
    user: str,
    item: str,
    it: ItemStats | None,
    ts: float,
) -> tuple[list[int], list[float]] | None:
    """The features of the example of ``task`` the step makes when the exposure arrives as an
    event on the stored state (None: it makes none, as a rating task of an event with no value,
    or a key with ``open_per_key`` examples open already). ``core``: a step with
    ``run.training_log`` set, which logs the examples learned at once."""
    state = PipelineState.load(store, core.config)
    events = [exposure(user, task, item, it, ts)]
    # what a runner loads before a step (``local.apply_batch``); nothing is committed
    state.ensure_aliases(store, core.alias_keys(state, events))
    state.ensure_loaded(store, *core.required_keys(state, events))
    out = core.step(state, events)
    if task.label.kind != "delayed":
        assert out.learned is not None
        c = out.learned.columns
        at = [k for k, name in enumerate(c["task"]) if name == task.name]
        assert len(at) <= 1
        return (c["feature_idx"][at[0]], c["feature_val"][at[0]]) if at else None
    log = out.pending[task.name]
    created = log.log().created if isinstance(log, PendingColumns) else log.created
    if not created:
        return None
    (p,) = created
    return list(memoryview(p.idx).cast("q")), list(memoryview(p.val).cast("d"))


def logging_core(core: Core) -> Core:
    """A step of ``core``'s pipeline that logs the examples it learns."""
    cfg = core.config
    return Core(
        msgspec.structs.replace(cfg, run=msgspec.structs.replace(cfg.run, training_log="x"))
    )


def hashes_to(builder: FeatureBuilder, name: str, i: int) -> bool:
    """Whether feature ``name`` is one that hashes to index ``i``."""
    if name.startswith("user_x_topic="):
        user, topic = name.split("=", 1)[1].split("|", 1)
        salt = builder.scalars["user_x_topic"]
        return cross_index(builder.part(user), builder.part(topic), salt, builder.mask) == i
    return zlib.crc32(name.encode()) & builder.mask == i


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 50),
    crosses=st.booleans(),
    time_of_day=st.booleans(),
    behaviour=st.sampled_from([(0, False), (3, False), (4, True), (32, True)]),
    bits=st.sampled_from([12, 20]),
)
def test_served_features_are_those_of_the_steps_example(
    seed: int, crosses: bool, time_of_day: bool, behaviour: tuple[int, bool], bits: int
) -> None:
    keys, value = behaviour
    features = FeatureConfig(bits=bits, crosses=crosses, time_of_day=time_of_day)
    profile = ProfileConfig(top_k=4, outcome_keys=3, behaviour_keys=keys, behaviour_value=value)
    store, core = replayed(seed, features, profile)
    profiles, items = stored(store)
    builder = core.features
    served = ExposureFeatures(core)
    stepped = logging_core(core)
    rnd = random.Random(seed)
    watermark = read_checkpoint(store).watermark
    users = sorted(profiles)
    known = sorted(items)
    assert any(p.behaviour_items for p in profiles.values()) == (keys > 0)
    compared = named = 0
    for k in range(12):
        user = rnd.choice(users) if k else "nobody-yet"
        p = profiles.get(user)
        candidates = [*rnd.sample(known, 8), f"new-item-{k}"]
        stats = [items.get(i) for i in candidates]
        last = watermark if p is None else p.last_ts
        # the step closes the examples due before an event past the watermark (and counts their
        # outcomes): there serving is compared with itself only (shared features, names)
        future = watermark + 3 * 86400.0 + 17.0
        ts = rnd.choice([last - 2 * 86400.0, last, watermark, future])
        for task in rnd.sample(ALL_TASKS, 4):
            built = served.build(task, user, p, candidates, stats, ts)
            common: Counter[tuple[int, float]] | None = None
            for j in range(len(candidates)):
                pairs = Counter(zip(*built.example(j), strict=True))
                common = pairs if common is None else common & pairs
            assert built.shared() == common
            for j, (item, it) in enumerate(zip(candidates, stats, strict=True)):
                idx, val, names = built.explained(j)
                assert list(built.merged(j).items()) == list(merged(idx, val).items())
                for i, got in zip(idx, names, strict=True):  # every name hashes to its index
                    assert hashes_to(builder, got, i), (got, i)
                    named += 1
                if ts == future or j % 3:  # the step once per candidate in three
                    continue
                want = reference(store, stepped, task, user, item, it, ts)
                if want is not None:
                    assert (idx, val) == want, (task.name, user, item)
                    compared += 1
    assert compared >= 12 and named > 12 * 4 * 9 * 10


def reference_scores(
    store: Store, core: Core, user: str, items: list[str], task: TaskConfig
) -> list[float] | None:
    """The task's scores of ``items`` for ``user`` from the features of the step's examples of
    their exposures (None: the step makes no example of one of them)."""
    ckpt = read_checkpoint(store)
    (blob,) = store.read("profile", [user])
    p = decode_profile(blob, user)
    stats = [
        None if b is None else decode_item(b, i)
        for i, b in zip(items, store.read("item", items), strict=True)
    ]
    ts = scoring_time(ckpt, p)
    ops = OpBatch()
    stepped = logging_core(core)
    for item, it in zip(items, stats, strict=True):
        want = reference(store, stepped, task, user, item, it, ts)
        if want is None:
            return None
        x = merged(*want)
        ops.add(PREDICT, list(x), list(x.values()))
    learner = StoredModels(store).get(task.name, ckpt.seq)
    assert learner is not None
    return [float(s) for s in run_ops(learner, ops)]


def test_recommendations_score_the_features_of_the_steps_examples() -> None:
    store, replay = replayed(5, FeatureConfig(), ProfileConfig(top_k=4, behaviour_value=True))
    rec = Recommender(store, Core(replay.config))  # a serving core of its own
    core = rec.core
    profiles, items = stored(store)
    busiest = sorted(profiles, key=lambda u: (-profiles[u].n, u))[:3]
    candidates = [*sorted(items)[:12], "unseen"]  # each a state loaded and stepped
    checked = 0
    for user in busiest:
        for task in core.config.tasks:
            if StoredModels(store).get(task.name, read_checkpoint(store).seq) is None:
                continue
            out = rec.recommend(
                user, k=len(candidates), candidates=candidates, task=task.name, rank="model"
            )
            got = {row["item"]: row["score"] for row in out["items"]}
            want = reference_scores(store, core, user, candidates, task)
            if want is None:
                continue
            assert [got[i] for i in candidates] == want, task.name
            checked += 1
    assert checked >= 3 * 4


def exposure_digest() -> tuple[str, str]:
    """A digest of the served features of a small replay, and the kind of function that built
    them (compiled or not)."""
    import hashlib

    from liveprofile.engine import exposure as module

    store, core = replayed(
        9, FeatureConfig(), ProfileConfig(behaviour_keys=4, behaviour_value=True)
    )
    profiles, items = stored(store)
    served = ExposureFeatures(core)
    ts = read_checkpoint(store).watermark
    h = hashlib.sha256()
    for user in sorted(profiles)[:6]:
        for task in ALL_TASKS:
            built = served.build(
                task,
                user,
                profiles[user],
                sorted(items)[:10],
                [items[i] for i in sorted(items)[:10]],
                ts,
            )
            for j in range(10):
                h.update(msgspec.msgpack.encode(built.explained(j)))
    return h.hexdigest(), type(module.exposure_features).__name__


def test_uncompiled_serving_features_are_the_compiled_ones() -> None:
    env = {**os.environ, "LIVEPROFILE_NO_JIT": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    code = "import json, test_serving_rows as t; print(json.dumps(t.exposure_digest()))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    uncompiled, kind = json.loads(done.stdout.strip().splitlines()[-1])
    compiled, compiled_kind = exposure_digest()
    assert (kind, compiled_kind) == ("Uncompiled", "CPUDispatcher")
    assert uncompiled == compiled
