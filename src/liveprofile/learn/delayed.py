"""Delayed feedback: when a delayed example is learned, and how the served prediction is corrected.

A delayed task (``label.kind = "delayed"``) knows an exposure's true label only once its window
closes. ``label.feedback`` chooses how its learner is fed:

- ``"window"`` (:data:`WINDOW`, the default): the example is learned when its window closes,
  with its true label. The learner sees an unbiased stream, but always ``window`` late.
- ``"fnc"`` (:data:`FNC`, fake-negative calibration, Ktena et al., "Addressing delayed feedback
  for continuous training with neural networks in CTR prediction", RecSys 2019): every exposure
  is learned at once as a negative (right after it is scored), and learned again, as a
  positive, when its conversion comes. The learner is never late, but it learns a biased
  stream: a converting exposure is in it twice, once as a *fake negative*. If ``p`` is the true
  conversion probability, the stream's positive rate is ``b = p / (1 + p)``, so the model's
  output ``b`` is served as ``p = b / (1 - b)`` (:func:`fnc_correct`).
- ``"fnw"`` (:data:`FNW`, fake-negative weighting, same paper): the same stream, each learn
  operation weighted by the learner (:data:`~liveprofile.learn.base.FAKE_NEGATIVE`): a positive
  by ``1 + p``, a negative by ``(1 - p)(1 + p)``, ``p`` the model's prediction at that moment
  (not differentiated). These weights make the expected gradient that of the true labels, so
  the model's output is served as it is. Needs a learner that weighs (``ftrl``, ``ogd``,
  ``tuned``).
- ``"wait"`` (:data:`WAIT`, elapsed-time sampling as in ES-DFM, Yang et al., "Capturing delayed
  feedback in conversion rate prediction via elapsed-time sampling", AAAI 2021, without its
  importance weights): an example is learned ``label.wait`` after its exposure (shorter than the
  window), positive if it converted by then; one that converts later is learned again as a
  positive (a late positive duplicated). Nothing corrects the prediction, which is low by about
  the share of conversions that come after the wait.

Either way prequential evaluation is unchanged: each exposure is scored once, before anything of
its label is learned (the negative of ``fnc`` is learned after its prediction), and evaluated
against its true label when its window closes. The served score (``/v1/score``, the profile's
``scores``, the report's metrics) is the corrected one.

>>> fnc_correct(0.2)
0.25
>>> fnc_correct(0.5) == P_MAX, fnc_correct(0.0)
(True, 0.0)
>>> served(FNC, 0.2), served(WINDOW, 0.3)
(0.25, 0.3)
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from liveprofile.learn.base import FAKE_NEGATIVE

#: ``label.feedback`` values, and their codes in the compiled step's task table
WINDOW, FNC, FNW, WAIT = "window", "fnc", "fnw", "wait"
MODES = {WINDOW: 0, FNC: 1, FNW: 2, WAIT: 3}

#: the highest corrected prediction served: ``b / (1 - b)`` is 1 at ``b = 0.5`` and beyond it
#: is not a probability
P_MAX = 1.0 - 1e-6


def fnc_correct(b: float) -> float:
    """The conversion probability a model trained with fake negatives means by ``b``.

    >>> round(fnc_correct(0.1), 6)
    0.111111
    """
    if math.isnan(b):
        return b
    if b >= 0.5:
        return P_MAX
    return min(b / (1.0 - b), P_MAX)


def fnc_correct_many(b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """:func:`fnc_correct` of each of ``b`` (NaN stays NaN), to the same bits.

    >>> fnc_correct_many(np.array([0.2, 0.7, np.nan])).tolist()[:2] == [0.25, P_MAX]
    True
    """
    out = np.full(b.shape, P_MAX)
    low = b < 0.5
    out[low] = np.minimum(b[low] / (1.0 - b[low]), P_MAX)
    out[np.isnan(b)] = np.nan
    return out


def served(mode: str, b: float) -> float:
    """The prediction served for a model output ``b`` of a task fed in ``mode``."""
    return fnc_correct(b) if mode == FNC else b


def op_flags(mode: str) -> int:
    """The flags a task fed in ``mode`` adds to its learn operations (:data:`FAKE_NEGATIVE`).

    >>> op_flags(FNW), op_flags(FNC)
    (4, 0)
    """
    return FAKE_NEGATIVE if mode == FNW else 0
