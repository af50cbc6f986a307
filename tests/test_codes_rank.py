"""The ranks the compiled step breaks ties by (:meth:`StringCodes.rank`): whatever the order
strings arrive in, batch by batch, their labels order the codes as the strings sort, and a
batch labels only its new strings unless a gap between two labels ran out."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from liveprofile.engine import codes as codes_module
from liveprofile.engine.codes import StringCodes

_text = st.text(alphabet="abcz", min_size=0, max_size=4)


def _check(codes: StringCodes) -> None:
    labels = codes.rank()
    assert labels.shape == (len(codes),)
    order = [codes.names[c] for c in np.argsort(labels, kind="stable")]
    assert order == sorted(codes.names)
    assert len(set(labels.tolist())) == len(codes)  # distinct: strings are


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_text, max_size=12), max_size=12), st.booleans())
def test_labels_order_codes_as_their_strings_sort(batches: list[list[str]], small: bool) -> None:
    with pytest.MonkeyPatch.context() as patch:
        if small:  # a narrow range, so that gaps run out and every string is labelled anew
            patch.setattr(codes_module, "LIMIT", 128)
            patch.setattr(codes_module, "STEP", 8)
        codes = StringCodes()
        for batch in batches:
            codes.add_missing(batch)
            _check(codes)
        event(f"labelled anew: {codes.relabelled > 0}")


@settings(max_examples=50, deadline=None)
@given(st.lists(_text, min_size=1, max_size=30, unique=True))
def test_a_batch_moves_no_label_while_gaps_last(strings: list[str]) -> None:
    codes = StringCodes()
    codes.add_missing(strings[: len(strings) // 2])
    before = codes.rank().copy()
    codes.add_missing(strings[len(strings) // 2 :])
    after = codes.rank()
    assert codes.relabelled == 0
    assert (after[: len(before)] == before).all()
    _check(codes)


def test_strings_inserted_at_one_place_relabel_now_and_then() -> None:
    """Each new string between the same two neighbours halves their gap: about 62 fit before
    the range is labelled anew, and the order holds throughout."""
    codes = StringCodes()
    codes.add_missing(["a", "b"])
    codes.rank()
    for k in range(200):
        codes.add_missing(["a" + "z" * (k + 1)])  # each sorts just before "b"
        _check(codes)
    assert 1 <= codes.relabelled <= 200 // 40
    ascending = StringCodes()  # ids that arrive in order take steps, not halves
    for k in range(2000):
        ascending.add_missing([f"u{k:06d}"])
        ascending.rank()
    assert ascending.relabelled == 0
    _check(ascending)
