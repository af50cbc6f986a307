"""Computed traits: named expressions over profile fields, declared in the pipeline config.

Expressions are a safe subset of Python: numbers, strings, names, ``and``/``or``/``not``,
comparisons, arithmetic, ``x if c else y``, lookups like ``interest['Dairy']`` or
``score.repurchase`` (missing keys read as 0), and the functions ``log``, ``sqrt``, ``min``,
``max``, ``abs``. Fields: ``events``, ``frequency``, ``monetary``, ``mean_value``,
``days_active``, ``counts``, ``decayed``, ``interest`` (decayed weights), ``score``,
``trait`` (the computed traits), ``days_since_last_purchase`` and ``days_since_last_event``
(a large number when there is none), ``monetary_7d``, ``monetary_30d``, ``monetary_90d`` (spend
in the last days), ``lifecycle`` (``'new'``, ``'active'``, ``'at_risk'``, ``'lapsed'``),
``velocity`` (``velocity.events_per_min``, ``velocity.purchases_per_hour``,
``velocity.distinct_items_10m``, see :mod:`liveprofile.profile.risk`), ``anomaly`` (the
latest anomaly score, 0 when there is none), and ``item_behaviour`` / ``category_behaviour``
(the user's behaviour per item and category kept, see :mod:`liveprofile.profile.behaviour`:
``category_behaviour['Dairy'].purchase`` is a decayed count, ``.converted`` whether the user
bought there, ``.days_since`` the days since they last touched it, a large number if never).
Time-dependent fields are read as of the profile's last event for traits, and as of the
pipeline's watermark for segments.

>>> from liveprofile.config import ProfileConfig
>>> from liveprofile.profile.state import ProfileUpdater
>>> updater = ProfileUpdater(ProfileConfig())
>>> traits = TraitEvaluator({"big_spender": "monetary > 100", "fan": "counts.view >= 1"}, updater)
>>> p = updater.new("u1", 0.0)
>>> p.monetary = 150.0
>>> traits.update(p)
>>> p.traits
{'big_spender': True, 'fan': False}
>>> from liveprofile.config import PipelineConfig
>>> from liveprofile.engine.core import Core
>>> from liveprofile.events import Event
>>> core = Core(PipelineConfig())
>>> state = core.new_state()
>>> _ = core.step(state, [Event(f"e{i}", "u1", "view", 10.0 * i, item_id="i1") for i in range(3)])
>>> p = state.profiles["u1"]
>>> TraitEvaluator({"fast": "velocity.events_per_min >= 3 or anomaly > 0.8"}, updater).update(p)
>>> p.traits
{'fast': True}
>>> TraitEvaluator({"bad": "__import__('os')"}, updater)
Traceback (most recent call last):
...
liveprofile.errors.ConfigError: trait 'bad': only log, sqrt, min, max, abs can be called
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterable, Mapping
from types import CodeType
from typing import Any

from liveprofile.durations import DAY
from liveprofile.errors import ConfigError
from liveprofile.profile.state import Profile, ProfileUpdater, lifecycle

FIELDS = (
    "events",
    "frequency",
    "monetary",
    "mean_value",
    "days_active",
    "counts",
    "decayed",
    "interest",
    "score",
    "trait",
    "days_since_last_purchase",
    "days_since_last_event",
    "monetary_7d",
    "monetary_30d",
    "monetary_90d",
    "lifecycle",
    "velocity",
    "anomaly",
    "item_behaviour",
    "category_behaviour",
)
#: what ``days_since_last_purchase`` reads for a user who never bought anything
NEVER = 1e9
FUNCTIONS: dict[str, Any] = {
    "log": math.log1p,
    "sqrt": math.sqrt,
    "min": min,
    "max": max,
    "abs": abs,
}
#: what expressions see besides the fields: the functions and no builtins
GLOBALS: dict[str, Any] = {"__builtins__": {}, **FUNCTIONS}
_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.Mod,
    ast.Pow,
    ast.FloorDiv,
    ast.Compare,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.In,
    ast.NotIn,
    ast.IfExp,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.Subscript,
    ast.Attribute,
    ast.Call,
)


class Fields(dict[str, Any]):
    """A mapping that reads missing keys as 0 and also allows ``fields.key``."""

    def __missing__(self, key: str) -> float:
        return 0.0

    def __getattr__(self, key: str) -> Any:
        return self[key]


class Touched(Fields):
    """Behaviour by key: a key the user never touched reads as counts of 0, not converted, and
    touched ``NEVER`` days ago."""

    def __missing__(self, key: str) -> Fields:  # type: ignore[override]
        return Fields(days_since=NEVER, converted=False)


def compile_expression(name: str, text: str, what: str = "trait") -> CodeType:
    """Check an expression against the allowed subset and compile it."""
    label = f"{what} {name!r}"
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ConfigError(f"{label}: cannot parse {text!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ConfigError(f"{label}: {type(node).__name__} is not allowed in {text!r}")
        if isinstance(node, ast.Name) and node.id not in FIELDS and node.id not in FUNCTIONS:
            raise ConfigError(
                f"{label}: {node.id!r} is not allowed; fields are {', '.join(FIELDS)}"
            )
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ConfigError(f"{label}: {node.attr!r} is not allowed")
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
        ):
            raise ConfigError(f"{label}: only {', '.join(FUNCTIONS)} can be called")
    return compile(tree, f"<{what} {name}>", "eval")


def used_fields(codes: Iterable[CodeType]) -> list[str]:
    """The profile fields a set of compiled expressions reads (the rest need not be computed)."""
    used = {n for code in codes for n in code.co_names}
    return [f for f in FIELDS if f in used]


#: how each field is computed from (profile, updater, event time)
_FIELD_VALUES: dict[str, Callable[[Profile, ProfileUpdater, float], Any]] = {
    "events": lambda p, u, at: p.n,
    "frequency": lambda p, u, at: p.purchases,
    "monetary": lambda p, u, at: p.monetary,
    "mean_value": lambda p, u, at: p.value_sum / p.value_n if p.value_n else 0.0,
    "days_active": lambda p, u, at: (p.last_ts - p.first_ts) / DAY,
    "counts": lambda p, u, at: Fields(p.counts),
    "decayed": lambda p, u, at: Fields(u.decayed_counts(p, at)),
    "interest": lambda p, u, at: Fields(u.interests_unsorted(p, at)),
    "score": lambda p, u, at: Fields(p.scores),
    "trait": lambda p, u, at: Fields(p.traits),
    "days_since_last_purchase": lambda p, u, at: (
        NEVER if p.last_purchase_ts is None else max(0.0, (at - p.last_purchase_ts) / DAY)
    ),
    "days_since_last_event": lambda p, u, at: max(0.0, (at - p.last_ts) / DAY),
    "monetary_7d": lambda p, u, at: p.spent_within(7, at),
    "monetary_30d": lambda p, u, at: p.spent_within(30, at),
    "monetary_90d": lambda p, u, at: p.spent_within(90, at),
    "lifecycle": lambda p, u, at: lifecycle(p, at),
    "velocity": lambda p, u, at: Fields(u.risk.velocity(p, at)),
    "anomaly": lambda p, u, at: 0.0 if p.anomaly is None else p.anomaly,
    "item_behaviour": lambda p, u, at: Touched(
        {k: Fields(v) for k, v in u.behaviour.fields(p, at, "behaviour_items").items()}
    ),
    "category_behaviour": lambda p, u, at: Touched(
        {k: Fields(v) for k, v in u.behaviour.fields(p, at, "behaviour_categories").items()}
    ),
}


def profile_scope(
    p: Profile, updater: ProfileUpdater, at: float, fields: Iterable[str] | None = None
) -> dict[str, Any]:
    """The values expressions can use, as of event time ``at`` (only ``fields``, when given:
    some cost a loop)."""
    values = _FIELD_VALUES
    return {f: values[f](p, updater, at) for f in (FIELDS if fields is None else fields)}


def evaluate(code: CodeType, scope: Mapping[str, Any]) -> Any:
    """The value of a compiled expression in ``scope``; arithmetic errors become a message."""
    try:
        return eval(code, GLOBALS, scope)
    except (ArithmeticError, ValueError, TypeError) as exc:
        return f"error: {exc}"


class TraitEvaluator:
    """Evaluates the configured traits of a profile after each update."""

    def __init__(self, traits: Mapping[str, str], updater: ProfileUpdater) -> None:
        self._updater = updater
        self._code = {name: compile_expression(name, text) for name, text in traits.items()}
        if any("trait" in code.co_names for code in self._code.values()):
            raise ConfigError("traits cannot read other traits; segments can")
        self._fields = used_fields(self._code.values())

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields (of :data:`FIELDS`) the traits read."""
        return tuple(self._fields)

    def update(self, p: Profile) -> None:
        """Recompute the traits, as of the profile's last event."""
        scope = profile_scope(p, self._updater, p.last_ts, self._fields)
        p.traits = {name: evaluate(code, scope) for name, code in self._code.items()}
