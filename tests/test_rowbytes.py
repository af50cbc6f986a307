"""The profile maps and lists written by compiled code and read by msgspec hold the values the
rows hold: every header size, negative and large integers, whole and fractional times, no item
and no value."""

from __future__ import annotations

import numpy as np
from user_rows import ITEMS, KINDS, TOPICS, names, random_rows

from liveprofile.engine.rowbytes import row_fields
from liveprofile.profile.behaviour import unpack
from liveprofile.profile.risk import stamp


def test_row_fields_hold_the_rows_values() -> None:
    rng = np.random.default_rng(0)
    U = random_rows((0, 15, 20), rng)  # empty, the largest fixmap, a 16-bit header
    kinds, topics, items = names()
    got = row_fields(U, np.array([0, 1, 2]), kinds, topics, items)
    k, t, i = (n.table for n in (kinds, topics, items))
    assert len(got) == 3 and len(k) == 20 and len(t) == 48 and len(i) == 2
    kn, tn, inames = KINDS, TOPICS, ITEMS
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
        for k, (got_map, keys) in enumerate(
            ((x.behaviour_items, ITEMS), (x.behaviour_categories, TOPICS))
        ):
            m = int(U.blen[r, k])
            assert [(key, unpack(e)) for key, e in got_map.items()] == [
                (keys[c], tuple(U.bval[r, k, q].tolist()))
                for q, c in enumerate(U.bkey[r, k, :m].tolist())
            ]
        assert [type(e[0]) for e in x.recent] == [type(e[0]) for e in expected]
