"""Real-time segments: named rules over profile fields, declared in the pipeline config.

A rule is an expression in the same safe subset as traits (see ``liveprofile.profile.traits``),
e.g. ``monetary_90d > 200 and days_since_last_purchase < 14``, ``interest['Dairy'] > 0.5`` or
``score.purchase > 0.7``. A user belongs to a segment while its rule is true. Rules are read as of
the pipeline's watermark (its latest event time), so time-dependent rules such as
``days_since_last_purchase < 14`` are also re-checked for current members as event time moves on
(the sweep), not only when the member's own events arrive. Every change of membership is a
:class:`SegmentChange`.

>>> from liveprofile.config import ProfileConfig
>>> from liveprofile.profile.state import ProfileUpdater
>>> updater = ProfileUpdater(ProfileConfig())
>>> rules = SegmentRules({"big": "monetary > 100", "recent": "days_since_last_event < 7"}, updater)
>>> p = updater.new("u1", 0.0)
>>> p.monetary = 150.0
>>> rules.memberships(p, at=86400.0)
['big', 'recent']
>>> rules.memberships(p, at=30 * 86400.0)
['big']
>>> rules.time_dependent
True
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec

from liveprofile.errors import ConfigError
from liveprofile.profile.state import Profile, ProfileUpdater
from liveprofile.profile.traits import (
    GLOBALS,
    compile_expression,
    evaluate,
    profile_scope,
    used_fields,
)

#: fields whose value changes with event time alone, without an event of the user
TIME_FIELDS = frozenset(
    {
        "decayed",
        "interest",
        "days_since_last_purchase",
        "days_since_last_event",
        "monetary_7d",
        "monetary_30d",
        "monetary_90d",
        "lifecycle",
        # counts in windows ending at the watermark: they fall to 0 while the user is idle
        "velocity",
        # decayed counts and days since the last interaction, per item and category
        "item_behaviour",
        "category_behaviour",
    }
)
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


class SegmentChange(msgspec.Struct, frozen=True):
    """A user entered or left a segment at event time ``ts`` (the watermark of the batch)."""

    segment: str
    user_id: str
    change: str  # "enter" or "exit"
    ts: float


class SegmentRules:
    """The configured segments, compiled once."""

    def __init__(self, rules: Mapping[str, str], updater: ProfileUpdater) -> None:
        for name in rules:
            if _NAME.match(name) is None:
                raise ConfigError(
                    f"segment name {name!r} must be 1-64 letters, digits, '_', '.' or '-'"
                )
        self._updater = updater
        self._code = {
            name: compile_expression(name, text, "segment") for name, text in sorted(rules.items())
        }
        self._fields = used_fields(self._code.values())
        self.names = list(self._code)
        # all rules as one tuple expression: one eval per profile instead of one per rule (each
        # rule was checked on its own above; a rule that raises makes them run one by one)
        together = "(" + "".join(f"({rules[name]}),\n" for name in self.names) + ")"
        self._all = compile(together, "<segments>", "eval")
        #: whether some rule can change its value while the user is idle
        self.time_dependent = any(f in TIME_FIELDS for f in self._fields)

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields (of ``liveprofile.profile.traits.FIELDS``) the rules read."""
        return tuple(self._fields)

    def memberships(self, p: Profile, at: float) -> list[str]:
        """The segments ``p`` belongs to as of event time ``at``, sorted by name. A rule that
        fails to evaluate (e.g. a division by zero) does not make the user a member."""
        scope = profile_scope(p, self._updater, at, self._fields)
        try:
            values = eval(self._all, GLOBALS, scope)
        except (ArithmeticError, ValueError, TypeError):
            values = [evaluate(code, scope) for code in self._code.values()]
        return [
            name
            for name, value in zip(self.names, values, strict=True)
            if not isinstance(value, str) and bool(value)
        ]

    def explain(self, p: Profile, at: float) -> dict[str, object]:
        """Each rule's value for ``p`` (for people checking why a user is or is not in)."""
        scope = profile_scope(p, self._updater, at, self._fields)
        return {name: evaluate(code, scope) for name, code in self._code.items()}


def diff(user: str, old: list[str], new: list[str], ts: float) -> list[SegmentChange]:
    """The changes that take ``user`` from the segments ``old`` to ``new``.

    >>> [(c.segment, c.change) for c in diff("u1", ["a", "b"], ["b", "c"], 0.0)]
    [('a', 'exit'), ('c', 'enter')]
    """
    left = [SegmentChange(s, user, "exit", ts) for s in old if s not in new]
    entered = [SegmentChange(s, user, "enter", ts) for s in new if s not in old]
    return left + entered
