"""Identity links that lead to an erased id.

A ``$forget`` of a user must remove every link to it, and a profile's ``aliases`` list does not
name them all: a login whose visitor id sent nothing before links it without a profile to fold
(so without an alias entry), the list keeps the last ``MAX_ALIASES`` ids only, and a link to a
user later merged into another still leads to the merged id. So erasure finds the links by
their target: before a batch with a ``$forget``, :func:`load_links_to` reads the links of the
store's link namespace that lead to the erased ids (one scan of the namespace, for that batch
only) into the state, and at the erasure :func:`unlink_to` removes every link of the state that
leads to them, following links to linked ids.

>>> from liveprofile.config import PipelineConfig
>>> from liveprofile.engine.lifecycle import StepResult
>>> from liveprofile.engine.state import PipelineState
>>> from liveprofile.store.layout import ALIASES

if TYPE_CHECKING:
    from liveprofile.engine.lifecycle import StepResult

T = TypeVar("T", str, bytes)
>>> from liveprofile.store.memory import MemoryStore
>>> store = MemoryStore()
>>> store.commit({ALIASES: {"v1": b"u1", "v2": b"v1", "v3": b"u3"}}, {})
>>> state = PipelineState(PipelineConfig())
>>> load_links_to(state, store, {"u1"})
>>> sorted(state.aliases.items())
[('v1', 'u1'), ('v2', 'v1')]
>>> out = StepResult()
>>> sorted(unlink_to(state, {"u1"}, out)), state.aliases, out.links
(['v1', 'v2'], {}, {'v1': None, 'v2': None})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

from liveprofile.engine.state import PipelineState
from liveprofile.events.columns import EventColumns
from liveprofile.events.schema import FORGET, Event
from liveprofile.store.base import Store
from liveprofile.store.codec import damaged
from liveprofile.store.layout import ALIASES

if TYPE_CHECKING:
    from liveprofile.engine.lifecycle import StepResult

T = TypeVar("T", str, bytes)


def erased_ids(events: Sequence[Event]) -> set[str]:
    """The ids a batch erases (events as columns are plain: none)."""
    if isinstance(events, EventColumns):
        return set()
    return {e.user for e in events if e.type == FORGET}


def load_links_to(state: PipelineState, store: Store, ids: set[str]) -> None:
    """Read into ``state`` the stored links that lead to ``ids``, directly or through other
    linked ids. Costs one scan of the store's link namespace."""
    if not ids:
        return
    rows = list(store.scan(ALIASES))
    found: dict[str, str] = {}
    for anon, user in _closure(rows, {i.encode() for i in ids}, str.encode):
        with damaged("alias row", anon):
            found[anon] = user.decode()
    state.take_aliases(found)


def unlink_to(state: PipelineState, ids: set[str], out: StepResult) -> set[str]:
    """Remove the links of ``state`` that lead to ``ids``, directly or through other linked
    ids; return the ids unlinked. Costs a pass over the links the state holds (two, or one
    more per step of a chain of links)."""
    aliases = state.aliases
    removed = [anon for anon, _ in _closure(aliases.items(), ids, str)]
    for anon in removed:
        del aliases[anon]
        out.links[anon] = None
    return set(removed)


def _closure(
    links: Iterable[tuple[str, T]], targets: set[T], key: Callable[[str], T]
) -> list[tuple[str, T]]:
    """The links leading to ``targets``, directly or through other linked ids (``key``: an
    id as a target: the targets are ``str``, or the ``bytes`` of stored rows)."""
    out: list[tuple[str, T]] = []
    seen: set[str] = set()
    while targets:
        hits = [(anon, user) for anon, user in links if user in targets and anon not in seen]
        seen.update(anon for anon, _ in hits)
        out += hits
        targets = {key(anon) for anon, _ in hits}
    return out
