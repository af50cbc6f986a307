"""Kernel user rows filled with random values of every field, for the row readers' and writers'
tests (``engine.rowbytes``): what they read back must be exactly what was put in."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from liveprofile.engine.records import Users
from liveprofile.engine.rowbytes import Names

#: the type, topic and item names the rows' codes stand for
KINDS = [f"type{i}" for i in range(20)]
TOPICS = [f"topic-{'é' * i}" for i in range(48)]
ITEMS = ["i" * 40, "short"]


def names() -> tuple[Names, Names, Names]:
    """Name tables of :data:`KINDS`, :data:`TOPICS` and :data:`ITEMS`."""
    return Names().sync(KINDS), Names().sync(TOPICS), Names().sync(ITEMS)


def random_rows(
    sizes: tuple[int, ...],
    rng: np.random.Generator,
    outcomes: npt.NDArray[np.int64] | None = None,
    spend: int = 500,
) -> Users:
    """One row per entry of ``sizes``, each with that many entries in every map and list;
    key outcomes are ``outcomes`` (cycled) or random 41-bit integers, spends within ``spend``."""
    U = Users.empty(len(sizes), types=20, tasks=1, top_k=40, room=40, recent=20, behaviour=(22, 6))
    for r, m in enumerate(sizes):
        U.tord[r, :m] = rng.permutation(20)[:m]
        U.tlen[r] = m
        U.cnt[r] = rng.integers(0, 1 << 40, 20)
        U.dec[r] = rng.normal(size=20)
        U.ik[r, :m] = rng.permutation(48)[:m]
        U.iv[r, :m] = rng.normal(size=m)
        U.il[r] = m
        U.okey[r, :m] = rng.integers(0, 1 << 32, m)
        if outcomes is None:
            U.oval[r, :m] = rng.integers(-(1 << 40), 1 << 40, m)
        else:
            U.oval[r, :m] = np.resize(outcomes, m)
        U.olen[r] = m
        U.sday[r, :m] = rng.integers(0, 30_000, m)
        U.scents[r, :m] = rng.integers(-spend, spend, m)
        U.slen[r] = m
        U.rts[r, :m] = np.where(np.arange(m) % 2, 1.7e9 + np.arange(m), 1.7e9 + 0.25)
        U.rty[r, :m] = rng.integers(0, 20, m)
        U.rit[r, :m] = rng.integers(-1, 2, m)
        U.rva[r, :m] = np.where(np.arange(m) % 3, rng.normal(size=m), np.nan)
        U.rlen[r] = m
        for k in range(2):  # behaviour: items (of two names), categories (of 48)
            keys = rng.permutation(2 if k == 0 else 48)[: min(m, 2) if k == 0 else m]
            U.bkey[r, k, : len(keys)] = keys
            U.bval[r, k, : len(keys)] = rng.normal(size=(len(keys), 6))
            U.blen[r, k] = len(keys)
    return U
