"""The profile maps and lists written by compiled code and read by msgspec hold the values the
rows hold: every header size, negative and large integers, whole and fractional times, no item
and no value."""

from __future__ import annotations

import numpy as np

from liveprofile.engine.records import Users
from liveprofile.engine.rowbytes import Names, row_fields
from liveprofile.profile.behaviour import unpack
from liveprofile.profile.risk import stamp


def test_row_fields_hold_the_rows_values() -> None:
    rng = np.random.default_rng(0)
    U = Users.empty(3, types=20, tasks=1, top_k=40, room=40, recent=20, behaviour=(22, 6))
    kinds = Names().sync([f"type{i}" for i in range(20)])
    topics = Names().sync([f"topic-{'é' * i}" for i in range(48)])
    items = Names().sync(["i" * 40, "short"])
    for r, m in enumerate((0, 15, 20)):  # empty, the largest fixmap, a 32-bit header
        U.tord[r, :m] = rng.permutation(20)[:m]
        U.tlen[r] = m
        U.cnt[r] = rng.integers(0, 1 << 40, 20)
        U.dec[r] = rng.normal(size=20)
        U.ik[r, :m] = rng.permutation(48)[:m]
        U.iv[r, :m] = rng.normal(size=m)
        U.il[r] = m
        U.okey[r, :m] = rng.integers(0, 1 << 32, m)
        U.oval[r, :m] = rng.integers(-(1 << 40), 1 << 40, m)
        U.olen[r] = m
        U.sday[r, :m] = rng.integers(0, 30_000, m)
        U.scents[r, :m] = rng.integers(-500, 500, m)
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
    got = row_fields(U, np.array([0, 1, 2]), kinds, topics, items)
    k, t, i = (n.table for n in (kinds, topics, items))
    assert len(got) == 3 and len(k) == 20 and len(t) == 48 and len(i) == 2
    kn, tn = [f"type{j}" for j in range(20)], [f"topic-{'é' * j}" for j in range(48)]
    inames = ["i" * 40, "short"]
    for r, x in enumerate(got):
        order = U.tord[r, : U.tlen[r]].tolist()
        assert x.counts == {kn[c]: int(U.cnt[r, c]) for c in order}
        assert list(x.counts) == [kn[c] for c in order]
        assert x.decayed == {kn[c]: float(U.dec[r, c]) for c in order}
        m = int(U.il[r])
        assert list(x.interests.items()) == list(
            zip([tn[c] for c in U.ik[r, :m].tolist()], U.iv[r, :m].tolist(), strict=True)
        )
        m = int(U.olen[r])
        assert list(x.key_outcomes.items()) == list(
            zip(U.okey[r, :m].tolist(), U.oval[r, :m].tolist(), strict=True)
        )
        m = int(U.slen[r])
        assert x.spend == dict(zip(U.sday[r, :m].tolist(), U.scents[r, :m].tolist(), strict=True))
        m = int(U.rlen[r])
        expected = [
            (stamp(ts), kn[ty], None if it < 0 else inames[it], None if va != va else va)
            for ts, ty, it, va in zip(
                U.rts[r, :m].tolist(),
                U.rty[r, :m].tolist(),
                U.rit[r, :m].tolist(),
                U.rva[r, :m].tolist(),
                strict=True,
            )
        ]
        assert x.recent == expected
        for k, (got_map, names) in enumerate(
            ((x.behaviour_items, inames), (x.behaviour_categories, tn))
        ):
            m = int(U.blen[r, k])
            assert [(key, unpack(e)) for key, e in got_map.items()] == [
                (names[c], tuple(U.bval[r, k, q].tolist()))
                for q, c in enumerate(U.bkey[r, k, :m].tolist())
            ]
        assert [type(e[0]) for e in x.recent] == [type(e[0]) for e in expected]
