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

from collections.abc import Sequence
from typing import TYPE_CHECKING

from liveprofile.engine.state import PipelineState
from liveprofile.events.columns import EventColumns
from liveprofile.events.schema import FORGET, Event
from liveprofile.store.base import Store
from liveprofile.store.codec import damaged
from liveprofile.store.layout import ALIASES

if TYPE_CHECKING:
    from liveprofile.engine.lifecycle import StepResult


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
    linked: dict[str, list[str]] = {}  # user -> the ids linked to it
    for anon, blob in store.scan(ALIASES):
        with damaged("alias row", anon):
            linked.setdefault(blob.decode(), []).append(anon)
    found: dict[str, str] = {}
    todo = list(ids)
    while todo:
        user = todo.pop()
        for anon in linked.pop(user, ()):
            found[anon] = user
            todo.append(anon)
    state.take_aliases(found)


def unlink_to(state: PipelineState, ids: set[str], out: StepResult) -> set[str]:
    """Remove the links of ``state`` that lead to ``ids``, directly or through other linked
    ids; return the ids unlinked. Costs one pass over the links the state holds."""
    aliases = state.aliases
    linked: dict[str, list[str]] = {}
    for anon, user in aliases.items():
        linked.setdefault(user, []).append(anon)
    removed: set[str] = set()
    todo = list(ids)
    while todo:
        for anon in linked.pop(todo.pop(), ()):
            del aliases[anon]
            out.links[anon] = None
            removed.add(anon)
            todo.append(anon)
    return removed
