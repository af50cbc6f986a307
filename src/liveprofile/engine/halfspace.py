"""River's HalfSpaceTrees run over a batch's readings in compiled code.

The anomaly detector (:class:`~liveprofile.profile.risk.AnomalyScorer`) is River's
``HalfSpaceTrees``: it makes, stores and loads the trees, and its ``score_one`` and
``learn_one`` define what a score is. Called once per event they cost about 150 µs (ten trees
walked twice in Python, through dicts and generators), most of a replay with the detector on.
:class:`Trees` lays the detector's trees out as arrays once (each a complete binary tree,
nodes in River's depth-first order: the feature of each branch, its threshold, its children,
the masses of every node); :func:`score_and_learn` scores each reading of a batch and learns
it, in order, as ``score_one`` then ``learn_one`` would (the same walk, the same sums in the
same order, so the same floats), and the masses and the window's counter go back into River's
nodes, so that what is stored is River's detector as if it had seen every event itself.

>>> from liveprofile.config import RiskConfig
>>> from liveprofile.profile.risk import FEATURES, AnomalyScorer
>>> rng = np.random.default_rng(1)
>>> readings = rng.random((40, 6))
>>> ours, river = (AnomalyScorer(RiskConfig(window_size=10)) for _ in range(2))
>>> got = score_and_learn(ours, readings)
>>> want = []
>>> for row in readings.tolist():
...     x = dict(zip(FEATURES, row))
...     want.append(float(river.detector.score_one(x)))
...     river.detector.learn_one(x)
>>> got.tolist() == want and ours.dump() == river.dump()
True
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numba
import numpy as np
import numpy.typing as npt

from liveprofile.profile.risk import FEATURES, AnomalyScorer


class Trees(NamedTuple):
    """A detector's trees as arrays: ``[tree, node]`` in depth-first order."""

    feature: Any  # the feature a branch splits on (an index into FEATURES); -1: a leaf
    threshold: Any
    left: Any
    right: Any
    l_mass: Any  # the masses, as River keeps them (the window being counted, the last one)
    r_mass: Any
    window: Any  # [events counted in the window, whether it is the first window]
    nodes: list[list[Any]]  # River's nodes, in the same order

    @classmethod
    def of(cls, detector: Any) -> Trees:
        nodes = [list(tree.iter_dfs()) for tree in detector.trees]
        shape = (len(nodes), len(nodes[0]))
        feature = np.full(shape, -1, np.int64)
        threshold = np.zeros(shape)
        left, right = np.full(shape, -1, np.int64), np.full(shape, -1, np.int64)
        l_mass, r_mass = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        column = {name: j for j, name in enumerate(FEATURES)}
        for t, tree in enumerate(nodes):
            at = {id(node): k for k, node in enumerate(tree)}
            for k, node in enumerate(tree):
                l_mass[t, k], r_mass[t, k] = node.l_mass, node.r_mass
                if hasattr(node, "feature"):
                    feature[t, k], threshold[t, k] = column[node.feature], node.threshold
                    left[t, k], right[t, k] = at[id(node.left)], at[id(node.right)]
        window = np.array([detector.counter, detector._first_window], np.int64)
        return cls(feature, threshold, left, right, l_mass, r_mass, window, nodes)

    def write_back(self, detector: Any) -> None:
        """The masses and the window's counter into River's nodes and detector."""
        for tree, lm, rm in zip(
            self.nodes, self.l_mass.tolist(), self.r_mass.tolist(), strict=True
        ):
            for node, a, b in zip(tree, lm, rm, strict=True):
                node.l_mass, node.r_mass = a, b
        detector.counter = int(self.window[0])
        detector._first_window = bool(self.window[1])


def score_and_learn(scorer: AnomalyScorer, readings: npt.NDArray[np.float64]) -> Any:
    """The scores of ``readings`` (one row of :data:`FEATURES` an event), each scored before it
    is learned, in order; the detector has learned them all after."""
    detector = scorer.detector
    out = np.zeros(len(readings))
    start = 0
    if not detector.trees and len(readings):  # River makes its trees as it learns the first
        x = dict(zip(FEATURES, readings[0].tolist(), strict=True))
        out[0] = detector.score_one(x)
        detector.learn_one(x)
        start = 1
    if start < len(readings):
        trees = scorer.compiled
        if trees is None or trees.nodes[0][0] is not detector.trees[0]:
            trees = scorer.compiled = Trees.of(detector)
        height, size = detector.height, detector.window_size
        max_score = float(detector.n_trees * size * (2 ** (height + 1) - 1))
        _run(readings[start:], tuple(trees[:7]), size, 0.1 * size, max_score, out[start:])
        trees.write_back(detector)
    return out


@numba.njit(cache=True, nogil=True)
def _run(X, trees, size, size_limit, max_score, out):  # type: ignore[no-untyped-def]
    """``score_one`` then ``learn_one`` for each row of ``X``; ``trees``: the arrays of
    :class:`Trees` (without the nodes)."""
    feature, threshold, left, right, l_mass, r_mass, window = trees
    n_trees = feature.shape[0]
    for k in range(X.shape[0]):
        x = X[k]
        if window[1]:  # River scores 0 through the first window
            out[k] = 0.0
        else:
            score = 0.0
            for t in range(n_trees):
                node, depth = 0, 0
                while True:
                    score += r_mass[t, node] * 2.0**depth
                    if r_mass[t, node] < size_limit or feature[t, node] < 0:
                        break
                    f = feature[t, node]
                    node = left[t, node] if x[f] < threshold[t, node] else right[t, node]
                    depth += 1
            out[k] = 1.0 - score / max_score
        for t in range(n_trees):
            node = 0
            while True:
                l_mass[t, node] += 1
                if feature[t, node] < 0:
                    break
                f = feature[t, node]
                node = left[t, node] if x[f] < threshold[t, node] else right[t, node]
        window[0] += 1
        if window[0] == size:
            r_mass[:, :] = l_mass
            l_mass[:, :] = 0
            window[0] = 0
            window[1] = 0
