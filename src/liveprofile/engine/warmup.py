"""Compiling the step ahead of the first real batch.

The step runs compiled with numba, which compiles each function the first time it is called
with a new kind of argument and keeps the machine code in its cache on disk (next to the
installed package, or under ``NUMBA_CACHE_DIR``). After a fresh install the first batches
pay for it: about 35 s for a stream of plain events and about 35 s more at the first batch with
a login (the folds of visitors into users), measured on a 2-core machine. A worker that meets its
first login an hour after it started stalls for that long, and every profile waits behind it.

:func:`warm_up` runs the step of a config on a small made-up shop (the synthetic generator's
events: a batch under user ids, then sessions anonymous until their first cart or purchase, so
logins fold visitors into new users and into users with profiles, then an erasure), in a
throwaway state and a temporary SQLite store, so that everything a stream can take is compiled,
or loaded from the cache, before any real event: ``liveprofile compile --config F`` at deploy
time, or ``liveprofile worker ... --warm-up`` at start-up (with a warm cache it costs well under
a second).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveprofile.config import PipelineConfig
from liveprofile.engine.local import LocalRunner
from liveprofile.errors import InvalidEvent
from liveprofile.events.schema import FORGET, Event, EventParser
from liveprofile.events.sources import Batch
from liveprofile.store.sqlite import SQLiteStore

#: the made-up shop: few users over a few days, enough for logins into profiles and TTL expiry
USERS, DAYS = 40, 4


@dataclass
class WarmUp:
    """What :func:`warm_up` did: events stepped and seconds taken, and how many compiled
    specialisations the project's functions had before and after."""

    events: int
    seconds: float
    compiled_before: int
    compiled_after: int


def compiled_signatures() -> int:
    """The number of compiled specialisations of the project's numba functions loaded so far
    (each kind of argument a function was compiled, or loaded from the cache, for)."""
    from numba.core.dispatcher import Dispatcher

    total = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith("liveprofile") or module is None:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and value.__module__ == name:
                total += len(value.signatures)
    return total


def shop_batches() -> list[list[Event]]:
    """The made-up shop's batches: events under user ids alone (a batch without identity
    events), then anonymous sessions logging in at their first cart or purchase (into new users
    and into users with profiles) in two batches, then the erasure of one user."""
    from liveprofile.datasets.logins import returning_logins
    from liveprofile.datasets.synthetic import SyntheticConfig, generate

    shop = SyntheticConfig(users=USERS, days=DAYS, seed=3)
    plain = _parsed(generate(shop))
    later = SyntheticConfig(users=USERS, days=DAYS, seed=4, start_ts=int(plain[-1].ts) + 1)
    logins = _parsed(returning_logins(generate(later)))
    half = len(logins) // 2
    last = logins[-1]
    forget = Event("warm-up-forget", last.user, FORGET, last.ts)
    return [plain, logins[:half], logins[half:], [forget]]


def _parsed(events: Iterable[Any]) -> list[Event]:
    parser = EventParser()
    out = []
    for raw in events:
        try:
            out.append(parser.parse_fields(raw))
        except InvalidEvent:  # (the generator makes none; kept out of the step all the same)
            continue
    return out


def warm_up(config: PipelineConfig) -> WarmUp:
    """Step ``config``'s pipeline over the made-up shop's batches, in a throwaway state and
    store (see the module), and say how long it took."""
    began = time.perf_counter()
    before = compiled_signatures()
    batches = shop_batches()
    with tempfile.TemporaryDirectory(prefix="liveprofile-warm-up-") as tmp:
        store = SQLiteStore(Path(tmp) / "profiles.db")  # (it tracks the model's changes)
        store.setup()
        runner = LocalRunner(config, store, Path(tmp) / "dead-letters.jsonl")
        try:
            for events in batches:
                runner.process("warm-up", Batch(events))
        finally:
            runner.close()
    made_up = sum(map(len, batches))
    return WarmUp(made_up, time.perf_counter() - began, before, compiled_signatures())
