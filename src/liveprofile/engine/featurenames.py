"""Readable names of the hashed feature indices the compiled feature functions emit.

A feature index is the hash of a name (``features.hashing.FeatureBuilder.index``), so a vector
cannot be read back without the names that may have made it. :class:`FeatureNames` keeps the
names of the fixed features from the very tables the kernel reads
(:func:`liveprofile.engine.layout.feature_tables`: the scalars by ``SCALARS``, the buckets of
each table by ``TABLES`` and the behaviour tables), and :meth:`FeatureNames.of_request` adds the
names of one request's strings (the user, the event type, the items, their categories, the
profile's decayed counts and the user x topic crosses) from the indices the code tables hold for
them. This is the one place that turns the compiled path's indices into names.

When two names hash to one index, a cross shows under its own name, then a fixed feature's
name wins over a request's string, as the Python builder registers the fixed names first.

>>> from liveprofile.config import PipelineConfig
>>> from liveprofile.engine.kernelargs import step_params
>>> from liveprofile.engine.step import Step
>>> step = Step(PipelineConfig())
>>> names = FeatureNames(step_params(step), step.updater.behaviour)
>>> names.fixed[step.features.index("bias")], names.fixed[step.features.index("hour=3")]
('bias', 'hour=3')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from liveprofile.engine import layout as L
from liveprofile.features.behaviour import table_names
from liveprofile.features.buckets import cross_index
from liveprofile.features.hashing import SCALARS, TABLES
from liveprofile.profile.behaviour import BehaviourTracker

if TYPE_CHECKING:
    from liveprofile.engine.codes import CodeTables
    from liveprofile.engine.records import Params


class FeatureNames:
    """Names by feature index for a pipeline's feature tables (see the module's docstring)."""

    def __init__(self, params: Params, tracker: BehaviourTracker) -> None:
        self.params = params
        tables = [*TABLES]
        if len(params.last) > len(TABLES):  # the behaviour tables are on
            tables += table_names(tracker.types, bool(tracker.value))
        fixed: dict[int, str] = {}
        for f, name in enumerate(SCALARS):
            fixed.setdefault(int(params.fc[f]), name)
        for r, (name, _) in enumerate(tables):
            for b in range(int(params.last[r]) + 1):
                fixed.setdefault(int(params.tabs[r, b]), f"{name}={b}")
        #: the names of the features every pipeline of this config has, by index
        self.fixed = fixed

    def of_request(
        self,
        tables: CodeTables,
        user: str,
        kind: str,
        items: Sequence[str],
        categories: Sequence[str],
        kinds: Sequence[str],
    ) -> dict[int, str]:
        """Names by index of the features one request may have besides :attr:`fixed` (for
        :meth:`names`): those of ``user``, the event type ``kind``, ``items``, their
        ``categories`` (as topics and crossed with the user) and the profile's decayed counts
        of ``kinds``, all interned in ``tables``."""
        fc, ip = self.params.fc, self.params.ip
        ucode = tables.users.code[user]
        type_code, topic_code = tables.types.code, tables.topics.code
        type_fidx, type_dec = tables.type_tables[:2]
        named: dict[int, str] = {}
        values = [(int(tables.user_fidx[ucode]), f"user={user}")]
        values.append((int(type_fidx[type_code[kind]]), f"type={kind}"))
        item_code = tables.items.code
        values += [(int(tables.item_fidx[item_code[i]]), f"item={i}") for i in items]
        values += [(int(tables.topic_fidx[topic_code[c]]), f"topic={c}") for c in categories]
        values += [(int(type_dec[type_code[k]]), f"decayed={k}") for k in kinds]
        fixed = self.fixed
        for i, name in values:
            if i not in named:
                named[i] = fixed.get(i, name)
        if ip[L.IP_CROSSES]:
            salt, mask, part = int(fc[L.F_CROSS_SALT]), int(ip[L.IP_MASK]), tables.user_part[ucode]
            for c in categories:
                h = cross_index(int(part), int(tables.topic_part[topic_code[c]]), salt, mask)
                named[h] = f"user_x_topic={user}|{c}"
        return named

    def names(self, named: dict[int, str], idx: Sequence[int]) -> list[str]:
        """The name of each of ``idx``: from ``named`` (:meth:`of_request`), else
        :attr:`fixed`, else ``#index`` (a feature of no name known here)."""
        fixed = self.fixed
        return [named.get(i) or fixed.get(i) or f"#{i}" for i in idx]
