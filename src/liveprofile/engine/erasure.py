"""Identity links that lead to an erased, expired or merged id.

A ``$forget`` or the TTL expiry of a user must remove every link to it, and a ``$merge`` of a
user into another must re-point them; a profile's ``aliases`` list does not name them all: a
login whose visitor id sent nothing before links it without a profile to fold (so without an
alias entry), and the list keeps the last ``MAX_ALIASES`` ids only. So the lifecycle finds the
links by their target: before a batch that erases, merges or may expire users
(:func:`relinked_ids`), :func:`load_links_to` reads the links that lead to them into the state,
found by the links' index by target (:mod:`liveprofile.engine.linkindex`); at the erasure or
expiry :func:`unlink_to` removes every link of the state that leads to them, following links to
linked ids, and at a merge :func:`repoint` points them at the user merged into. Links so stay
one step: no link leads to an id that is linked, erased or expired.

>>> from liveprofile.config import PipelineConfig
>>> from liveprofile.engine.lifecycle import StepResult
>>> from liveprofile.engine.state import PipelineState
>>> from liveprofile.store.layout import ALIASES, LINKS_BY_TARGET, link_index_key
>>> from liveprofile.store.memory import MemoryStore
>>> store = MemoryStore()
>>> links = {"v1": "u1", "v2": "v1", "v3": "u3"}
>>> store.commit({ALIASES: {a: u.encode() for a, u in links.items()},
...               LINKS_BY_TARGET: {link_index_key(u, a): b"" for a, u in links.items()}}, {})
>>> state = PipelineState(PipelineConfig())
>>> load_links_to(state, store, {"u1"})
>>> sorted(state.aliases.items())
[('v1', 'u1'), ('v2', 'v1')]
>>> out = StepResult()
>>> sorted(unlink_to(state, {"u1"}, out)), state.aliases, out.links
(['v1', 'v2'], {}, {'v1': None, 'v2': None})
>>> state.aliases.update({"v1": "u1", "v2": "v1", "u1": "u2"})
>>> repoint(state, "u1", "u2", out), state.aliases
(['v1', 'v2'], {'v1': 'u2', 'v2': 'u2', 'u1': 'u2'})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar, cast

from liveprofile.engine.lazyprofiles import peek
from liveprofile.engine.linkindex import LinkMap, find_links_to
from liveprofile.engine.state import PipelineState
from liveprofile.events.columns import EventColumns
from liveprofile.events.schema import COMMANDS, FORGET, MERGE, Event
from liveprofile.store.base import Store
from liveprofile.store.codec import damaged
from liveprofile.store.layout import ALIASES, links_indexed

if TYPE_CHECKING:
    from liveprofile.engine.lifecycle import StepResult

T = TypeVar("T", str, bytes)


def relinked_ids(
    state: PipelineState,
    events: Sequence[Event],
    users: Iterable[str],
    ttl: float | None,
    horizon: float,
) -> set[str]:
    """The ids whose links a batch may remove or re-point: the ids it erases, those a
    ``$merge`` folds into another user and, with a TTL, those of ``users`` (loaded into
    ``state``) that may expire by event time ``horizon``."""
    no_commands = isinstance(events, EventColumns) and COMMANDS.isdisjoint(events.type)
    ids = set() if no_commands else {
        e.anonymous_id if e.type == MERGE else e.user
        for e in events
        if e.type == FORGET or (e.type == MERGE and e.anonymous_id is not None)
    }  # fmt: skip
    if ttl is not None:
        profiles = state.profiles
        for user in users:
            p = peek(profiles, user)  # its last event time: no need to decode the rest
            if p is not None and p.last_ts + ttl < horizon:
                ids.add(user)
    return cast(set[str], ids)


def load_links_to(state: PipelineState, store: Store, ids: set[str]) -> None:
    """Read into ``state`` the stored links that lead to ``ids``, directly or through other
    linked ids: from the links' index by target (:mod:`liveprofile.engine.linkindex`), what
    the links found cost; in a store written before the index, by one scan of the links,
    which the batch's commit indexes."""
    if not ids:
        return
    if links_indexed(state.checkpoint):
        state.take_aliases(find_links_to(store, ids, state.link_index))
        return
    rows = list(store.scan(ALIASES))
    found: dict[str, str] = {}
    for anon, user in _closure(rows, {i.encode() for i in ids}, str.encode):
        with damaged("alias row", anon):
            found[anon] = user.decode()
    state.link_index.build(rows)
    state.take_aliases(found)


def unlink_to(state: PipelineState, ids: set[str], out: StepResult) -> set[str]:
    """Remove the links of ``state`` that lead to ``ids``, directly or through other linked
    ids; return the ids unlinked. Costs the links found (the state's links know their
    sources, :class:`~liveprofile.engine.linkindex.LinkMap`)."""
    aliases = state.aliases
    removed = [anon for anon, _ in _linked_to(aliases, ids)]
    for anon in removed:
        del aliases[anon]
        out.links[anon] = None
    return set(removed)


def repoint(state: PipelineState, old: str, new: str, out: StepResult) -> list[str]:
    """Point the links of ``state`` that lead to ``old``, directly or through other linked
    ids, at ``new`` (``old`` merged into it); return the ids re-pointed. Costs the links
    found."""
    aliases = state.aliases
    moved = [anon for anon, _ in _linked_to(aliases, {old}) if anon not in (old, new)]
    for anon in moved:
        aliases[anon] = new
        out.links[anon] = new
    return moved


def _linked_to(aliases: LinkMap, targets: set[str]) -> list[tuple[str, str]]:
    """The links of ``aliases`` leading to ``targets``, directly or through other linked ids,
    step by step, each step in id order."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    while targets:
        hits = sorted(
            (anon, user)
            for user in targets
            for anon in aliases.sources_of(user)
            if anon not in seen
        )
        seen.update(anon for anon, _ in hits)
        out += hits
        targets = {anon for anon, _ in hits}
    return out


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
