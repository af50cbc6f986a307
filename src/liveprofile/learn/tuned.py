"""Self-tuning: a champion and challengers trained in shadow, promotion and rollback.

:class:`TunedLearner` holds several learners: built-in linear ones (FTRL or OGD with their own
hyperparameters) and River classifiers (``{kind = "hoeffding", params = {...}}``, or ``{kind =
"river", model = "...", params = {...}}``, :class:`~liveprofile.learn.members.RiverMember`).
Every one of them sees every operation; the champion's predictions are served.
Each member's prequential log loss is tracked on every learned example, as an exponentially
weighted mean over about ``window`` examples. The prediction scored is the one the member made
when the example was predicted (a delayed example is predicted at its exposure and learned when
its label is known: its members' predictions are held meanwhile, in ``hold`` slots), else its
prediction just before it learns the example. Scoring the prediction at learn time instead
would favour fast learners, which have meanwhile learned from the same user's later examples.

- **Promotion**: once ``min_examples`` examples were learned since the last decision, the
  challenger with the lowest recent loss becomes champion if its loss is below the champion's by
  more than ``margin`` (relative: ``loss < (1 - margin) * champion_loss``).
- **Rollback**: during the ``min_examples`` examples after a promotion, the promotion is undone
  as soon as the new champion's loss rises above the one it replaced.

Every decision is logged with its figures in the learner's state (so it survives
:func:`~liveprofile.learn.registry.dump_learner`), and read by :meth:`TunedLearner.tuning`.
Decisions are taken example by example inside a batch, so the result does not depend on how the
operations are cut into batches.

>>> model = TunedLearner(
...     champion={"kind": "ogd", "params": {"lr": 1e-4}},
...     challengers=[{"kind": "ftrl", "params": {"alpha": 0.5}}],
...     min_examples=50, window=50, bits=10)
>>> for _ in range(100):
...     model.learn_one({"bias": 1.0, "colour=red": 1.0}, True)
...     model.learn_one({"bias": 1.0, "colour=blue": 1.0}, False)
>>> model.tuning()["champion"], model.tuning()["decisions"][0]["action"]
('ftrl(alpha=0.5)', 'promote')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numba
import numpy as np

from liveprofile.learn.base import LEARN, PREDICT, Learner, OpArrays
from liveprofile.learn.linear import (
    F64,
    Changes,
    FTRLProximal,
    LogisticOGD,
    _drain,
    _HashedLinear,
)
from liveprofile.learn.members import RIVER_KINDS, RiverMember

_MEMBERS: dict[str, type[_HashedLinear]] = {"ftrl": FTRLProximal, "ogd": LogisticOGD}

#: columns of the decision log
_LOG_COLUMNS = 6  # examples learned, action (1 promote, 2 rollback), from, to, loss from, loss to
PROMOTE, ROLLBACK = 1, 2
_ACTIONS = {PROMOTE: "promote", ROLLBACK: "rollback"}


class Race(NamedTuple):
    """What :func:`_walk` decides on: ``loss`` holds each member's recent log loss (NaN before
    its first example); ``state`` is [champion, previous champion or -1, examples learned,
    examples at the last decision]."""

    loss: Any
    state: Any


class Rules(NamedTuple):
    """How :func:`_walk` decides: the margin, the examples between decisions, and the weight of
    a new loss in the members' recent losses."""

    margin: float
    min_examples: float
    decay: float


class Held(NamedTuple):
    """The members' held predictions (``held[slot, member]``) and the key of the example held
    in each slot (0: none)."""

    keys: Any
    held: Any


@numba.njit(cache=True, nogil=True)
def _note(log, row, examples, action, old, new, loss_old, loss_new):  # type: ignore[no-untyped-def]
    log[row, 0] = examples
    log[row, 1] = action
    log[row, 2] = old
    log[row, 3] = new
    log[row, 4] = loss_old
    log[row, 5] = loss_new


@numba.njit(cache=True, nogil=True)
def _example_key(idx, val, s, e):  # type: ignore[no-untyped-def]
    """A 64-bit key of example ``[s, e)`` (never 0, which marks an empty slot)."""
    h = np.int64(1469598103934665603)
    for j in range(s, e):
        h = (h ^ idx[j]) * np.int64(1099511628211)
        h = (h ^ np.int64(val[j] * 1048576.0)) * np.int64(1099511628211)
    return h if h != 0 else np.int64(1)


@numba.njit(cache=True, nogil=True)
def _hold(preds, ops, slot_of):  # type: ignore[no-untyped-def]
    """Hold every member's prediction of a prediction-only operation (an exposure whose label
    comes later) in slot ``key % len(keys)`` of ``slot_of`` (:class:`Held`); when the same
    example is learned, put the held predictions back in ``preds``, so its loss is taken on
    them, as the served one was."""
    kinds, starts, idx, val = ops.kinds, ops.starts, ops.idx, ops.val
    held, keys = slot_of.held, slot_of.keys
    m = preds.shape[0]
    slots = keys.shape[0]
    for k in range(kinds.shape[0]):
        kind = kinds[k]
        if kind != 1 and kind != 2:
            continue
        key = _example_key(idx, val, starts[k], starts[k + 1])
        slot = abs(key % slots)
        if kind == 1:
            keys[slot] = key
            for j in range(m):
                held[slot, j] = preds[j, k]
        elif keys[slot] == key:
            keys[slot] = 0
            for j in range(m):
                preds[j, k] = held[slot, j]


@numba.njit(cache=True, nogil=True)
def _mark_slots(ops, marks):  # type: ignore[no-untyped-def]
    """Set ``marks`` at the hold slots :func:`_hold` reads or writes for these operations."""
    kinds, starts, idx, val = ops.kinds, ops.starts, ops.idx, ops.val
    slots = marks.shape[0]
    for k in range(kinds.shape[0]):
        kind = kinds[k]
        if kind == 1 or kind == 2:
            marks[abs(_example_key(idx, val, starts[k], starts[k + 1]) % slots)] = True


@numba.njit(cache=True, nogil=True)
def _walk(preds, ops, race, rules, log, out):  # type: ignore[no-untyped-def]
    """Serve the champion's prediction of each operation, update each member's recent loss on
    learned examples and take the decisions (``race``: :class:`Race`, ``rules``:
    :class:`Rules`); returns how many decisions were logged. ``preds`` are as :func:`_hold`
    left them."""
    margin, min_examples, decay = rules.margin, rules.min_examples, rules.decay
    kinds, ys, loss, state = ops.kinds, ops.ys, race.loss, race.state
    n_log = 0
    m = preds.shape[0]
    for k in range(kinds.shape[0]):
        champ = int(state[0])
        kind = kinds[k]
        out[k] = preds[champ, k] if kind & 1 else np.nan
        if not kind & 2:
            continue
        y = ys[k]
        for j in range(m):
            p = min(max(preds[j, k], 1e-15), 1.0 - 1e-15)
            ll = -(y * math.log(p) + (1.0 - y) * math.log(1.0 - p))
            if math.isnan(loss[j]):
                loss[j] = ll
            else:
                loss[j] += decay * (ll - loss[j])
        state[2] += 1.0
        since = state[2] - state[3]
        prev = int(state[1])
        if prev >= 0 and since <= min_examples and loss[champ] > loss[prev]:
            _note(log, n_log, state[2], 2.0, champ, prev, loss[champ], loss[prev])
            n_log += 1
            state[0], state[1], state[3] = prev, -1.0, state[2]
            continue
        if prev >= 0 and since > min_examples:
            state[1] = -1.0
        if since < min_examples or state[2] < min_examples:
            continue
        best = champ
        for j in range(m):
            if j != champ and loss[j] < loss[best]:
                best = j
        if best != champ and loss[best] < (1.0 - margin) * loss[champ]:
            _note(log, n_log, state[2], 1.0, champ, best, loss[champ], loss[best])
            n_log += 1
            state[0], state[1], state[3] = best, champ, state[2]
    return n_log


def _label(spec: Mapping[str, Any]) -> str:
    args = ",".join(f"{k}={v}" for k, v in sorted(spec.get("params", {}).items()))
    kind = spec["model"] if spec["kind"] == "river" else spec["kind"]
    return f"{kind}({args})"


def _member(spec: dict[str, Any], bits: int) -> _HashedLinear | RiverMember:
    """The learner of one member ``spec`` (see the module's docstring)."""
    kind = spec["kind"]
    river = kind == "river" and isinstance(spec.get("model"), str)
    keys = {"kind", "params", "model"} if river else {"kind", "params"}
    if (kind not in _MEMBERS and kind not in RIVER_KINDS and not river) or set(spec) - keys:
        raise ValueError(
            "a tuned member is {kind = ftrl|ogd|hoeffding, params = {...}} or {kind = river, "
            f"model = '...', params = {{...}}}}: {spec}"
        )
    if kind in _MEMBERS:
        return _MEMBERS[kind](**spec["params"], bits=bits)
    return RiverMember(kind, spec["params"], spec.get("model"))


class TunedLearner(_HashedLinear):
    """A champion and its challengers in shadow; serves the champion (see the module)."""

    kind = "tuned"

    def __init__(
        self,
        champion: Mapping[str, Any] | None = None,
        challengers: Sequence[Mapping[str, Any]] = (),
        margin: float = 0.01,
        min_examples: int = 1000,
        window: int = 5000,
        hold: int = 1 << 16,
        bits: int = 20,
    ) -> None:
        super().__init__(bits)
        if not 0.0 <= margin < 1.0 or min_examples < 1 or window < 1 or hold < 1:
            raise ValueError(
                "tuned needs 0 <= margin < 1, min_examples >= 1, window >= 1 and hold >= 1"
            )
        champion = champion or {"kind": "ftrl", "params": {}}
        self.specs: list[dict[str, Any]] = [
            {**s, "kind": str(s["kind"]), "params": dict(s.get("params", {}))}
            for s in [champion, *challengers]
        ]
        self.members = [_member(spec, bits) for spec in self.specs]
        self._weighs = all(isinstance(m, _HashedLinear) for m in self.members)
        self.margin, self.min_examples, self.window = float(margin), int(min_examples), int(window)
        self.hold = int(hold)
        self.keys = np.zeros(self.hold, dtype=np.int64)
        self.held = np.zeros((self.hold, len(self.members)))
        self.loss = np.full(len(self.members), np.nan)
        self.state = np.array([0.0, -1.0, 0.0, 0.0])
        self.log = np.zeros((0, _LOG_COLUMNS))
        #: hold slots used since the last :meth:`take_changes` (None: not tracked)
        self._slot_marks: np.ndarray[Any, np.dtype[np.bool_]] | None = None

    @property
    def fake_negative_weights(self) -> bool:  # type: ignore[override]
        """Fake-negative weights (feedback = "fnw") need members that all weigh."""
        return self._weighs

    @property
    def champion(self) -> Learner:
        """The member whose predictions are served."""
        return self.members[int(self.state[0])]

    def track_changes(self) -> bool:
        """Tracked when every member is a built-in linear learner (a River member's state
        is one pickle)."""
        if not self._weighs:
            return False
        if self._slot_marks is None:
            self._slot_marks = np.zeros(self.hold, dtype=np.bool_)
        return super().track_changes()

    def take_changes(self) -> Changes | None:
        """The members' learned coordinates, the hold slots used, and the small arrays whole.

        >>> model = TunedLearner(challengers=[{"kind": "ogd", "params": {}}], hold=16, bits=8)
        >>> model.track_changes()
        True
        >>> model.learn_one({3: 1.0}, True)
        >>> changes = model.take_changes()
        >>> changes["0.z"].tolist(), changes["1.w"].tolist(), changes["1.t"].tolist()
        ([3], [3], [0])
        >>> len(changes["keys"]), len(changes["held"])
        (1, 2)
        """
        marks, slot_marks = self._marks, self._slot_marks
        if marks is None or slot_marks is None:
            return None
        learned, slots = _drain(marks), _drain(slot_marks)
        m = len(self.members)
        out: Changes = {
            "loss": np.arange(self.loss.size),
            "state": np.arange(self.state.size),
            "log": np.arange(self.log.size),
            "keys": slots,
            "held": (slots[:, None] * m + np.arange(m)).reshape(-1),
        }
        for j, member in enumerate(self.members):
            changed = self._changed_of(member.arrays(), learned)
            out.update({f"{j}.{name}": index for name, index in changed.items()})
        return out

    def run_arrays(self, ops: OpArrays) -> F64:
        self._note(ops)
        if self._slot_marks is not None:
            _mark_slots(ops, self._slot_marks)
        # every member predicts every learned example before learning it: its prequential loss
        kinds = ops.kinds
        shadow = ops._replace(
            kinds=np.asarray(kinds | np.where(kinds & LEARN, PREDICT, 0), dtype=np.int8)
        )
        preds = np.stack([m.run_arrays(shadow) for m in self.members])
        out = np.empty(kinds.shape[0])
        log = np.empty((int(np.count_nonzero(kinds & LEARN)), _LOG_COLUMNS))
        rules = Rules(self.margin, float(self.min_examples), 1.0 / self.window)
        _hold(preds, ops, Held(self.keys, self.held))
        n = _walk(preds, ops, Race(self.loss, self.state), rules, log, out)
        if n:
            self.log = np.concatenate([self.log, log[:n]])
        return out

    def params(self) -> dict[str, Any]:
        return {
            "champion": self.specs[0],
            "challengers": self.specs[1:],
            "margin": self.margin,
            "min_examples": self.min_examples,
            "window": self.window,
            "hold": self.hold,
            "bits": self.bits,
        }

    def arrays(self) -> dict[str, F64]:
        out: dict[str, Any] = {"loss": self.loss, "state": self.state, "log": self.log}
        out.update({"keys": self.keys, "held": self.held})
        for j, member in enumerate(self.members):
            out.update({f"{j}.{name}": a for name, a in member.arrays().items()})
        return out

    def set_arrays(self, arrays: Mapping[str, F64]) -> None:
        self.log = np.array(arrays["log"], dtype=np.float64).reshape(-1, _LOG_COLUMNS)
        self.loss[:] = arrays["loss"]
        self.state[:] = arrays["state"]
        self.keys[:] = arrays["keys"]
        self.held[:] = np.asarray(arrays["held"]).reshape(self.held.shape)
        for j, member in enumerate(self.members):
            member.set_arrays({name: arrays[f"{j}.{name}"] for name in member.arrays()})
        if self._marks is not None and self._slot_marks is not None:
            self._marks[:] = True  # every coordinate may have changed
            self._slot_marks[:] = True

    def tuning(self) -> dict[str, Any]:
        """The champion, each member's recent loss and every decision with its figures."""
        labels = [_label(s) for s in self.specs]
        return {
            "champion": labels[int(self.state[0])],
            "examples": int(self.state[2]),
            "margin": self.margin,
            "min_examples": self.min_examples,
            "recent_log_loss": {
                lab: None if math.isnan(v) else round(float(v), 6)
                for lab, v in zip(labels, self.loss, strict=True)
            },
            "decisions": [
                {
                    "examples": int(row[0]),
                    "action": _ACTIONS[int(row[1])],
                    "from": labels[int(row[2])],
                    "to": labels[int(row[3])],
                    "loss_from": round(float(row[4]), 6),
                    "loss_to": round(float(row[5]), 6),
                }
                for row in self.log
            ],
        }


def tuning_of(learner: object) -> dict[str, Any]:
    """``{"tuning": ...}`` for a :class:`TunedLearner`, ``{}`` for any other learner.

    >>> tuning_of(FTRLProximal(bits=8))
    {}
    """
    return {"tuning": learner.tuning()} if isinstance(learner, TunedLearner) else {}
