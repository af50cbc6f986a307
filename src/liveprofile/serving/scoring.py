"""What a single score reads and what it says: the stored profile decoded only as far as an
exposure's features read it (:func:`scoring_profile`), the learners' weight of each feature
(:func:`feature_weights`) and the features with the largest contributions to the logit, the
reasons of a score or a recommended item (:func:`top_features`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from liveprofile.learn.base import Learner
from liveprofile.learn.linear import FTRLProximal, LogisticOGD
from liveprofile.learn.tuned import TunedLearner
from liveprofile.profile.state import PROFILE_SCHEMA, Profile, decode_profile
from liveprofile.store.codec import damaged

F64 = npt.NDArray[np.float64]


class _Scored(Profile, array_like=True, gc=False):
    """A stored profile as a score reads it: its recent events, spend, counts per type and
    velocity lists, which the features of an exposure do not read from a profile
    (``ExposureFeatures`` drops them), left undecoded (``msgspec.Raw``)."""

    counts: msgspec.Raw = msgspec.Raw()  # type: ignore[assignment]
    recent: msgspec.Raw = msgspec.Raw()  # type: ignore[assignment]
    spend: msgspec.Raw = msgspec.Raw()  # type: ignore[assignment]
    v_events: msgspec.Raw = msgspec.Raw()  # type: ignore[assignment]
    v_purchases: msgspec.Raw = msgspec.Raw()  # type: ignore[assignment]
    v_items: msgspec.Raw = msgspec.Raw()  # type: ignore[assignment]


assert _Scored.__struct_fields__ == Profile.__struct_fields__  # the stored array's order
_scored = msgspec.msgpack.Decoder(_Scored)


def scoring_profile(blob: bytes, user: str) -> Profile:
    """The profile in ``blob`` with only what an exposure's features read decoded (its
    counts, recent events, spend and velocity lists are empty); a profile of the schema
    before is decoded whole.

    >>> from liveprofile.profile.state import encode_profile
    >>> p = Profile("u1", 0.0, 1.0, 2.0, n=3, counts={"view": 3}, interests={"c": 1.5},
    ...             recent=[(2.0, "view", "i1", None)], spend={19000: 250})
    >>> q = scoring_profile(encode_profile(p), "u1")
    >>> q.n, q.interests, q.counts, q.recent, q.spend
    (3, {'c': 1.5}, {}, [], {})
    >>> empty = msgspec.structs.replace(p, counts={}, recent=[], spend={})
    >>> msgspec.structs.asdict(q) == msgspec.structs.asdict(empty)
    True
    """
    if blob[:1] != bytes([PROFILE_SCHEMA]):
        return decode_profile(blob, user)
    with damaged("profile", user):
        p = _scored.decode(memoryview(blob)[1:])
    return msgspec.structs.replace(
        p, counts={}, recent=[], spend={}, v_events=[], v_purchases=[], v_items=[]
    )


def feature_weights(learner: Learner, idx: Sequence[int]) -> F64 | None:
    """The weight of each index for the linear learners (FTRL's from z and n by its kernel's
    own function; a tuned learner's are its champion's); None for other learners, which have
    no per-feature weights."""
    if isinstance(learner, TunedLearner):
        learner = learner.champion
    j = np.asarray(idx, dtype=np.int64)
    if isinstance(learner, LogisticOGD):
        return np.asarray(learner.w[j & learner.mask], dtype=np.float64)
    if isinstance(learner, FTRLProximal):
        return learner.weights(j)
    return None


def top_positions(val: Sequence[float], weights: F64 | None, top: int) -> list[int]:
    """Where the ``top`` features with the largest |weight x value| are, largest first (ties
    in build order; build order when the learner has no weights).

    >>> top_positions([1.0, 1.0, 0.5], np.array([0.1, -2, 1]), 2)
    [1, 2]
    """
    if weights is None:
        return list(range(min(top, len(val))))
    contributions = np.abs(weights * np.asarray(val, dtype=np.float64))
    return np.argsort(-contributions, kind="stable")[:top].tolist()  # type: ignore[no-any-return]


def top_features(
    names: list[str], val: Sequence[float], weights: F64 | None, top: int
) -> list[list[Any]]:
    """``[name, contribution]`` of the ``top`` features with the largest |weight x value|
    (``[name, None]`` in build order when the learner has no weights).

    >>> top_features(["bias", "item=i1", "topic=c1"], [1.0, 1.0, 0.5], np.array([0.1, -2, 1]), 2)
    [['item=i1', -2.0], ['topic=c1', 0.5]]
    """
    return contributions(names, val, weights, top_positions(val, weights, top))


def contributions(
    names: Sequence[str] | Mapping[int, str],
    val: Sequence[float],
    weights: F64 | None,
    at: Sequence[int],
) -> list[list[Any]]:
    """``[name, weight x value]`` of the features at positions ``at`` (``[name, None]``
    without weights); ``names`` by position."""
    if weights is None:
        return [[names[k], None] for k in at]
    return [[names[k], float(weights[k]) * val[k]] for k in at]
