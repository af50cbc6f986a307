"""Online learning: ``base`` (River's learner protocol and the batched operations), ``linear``
(hashed linear learners compiled with numba), ``registry`` (learners from config, versioned
checkpoints), ``tasks`` (which events give examples, immediate and delayed labels) and
``metrics`` (prequential AUC, log loss and calibration)."""

from __future__ import annotations

from liveprofile.learn.base import BatchLearner, Learner, OpBatch
from liveprofile.learn.linear import FTRLProximal, LogisticOGD
from liveprofile.learn.registry import dump_learner, load_learner, make_learner

__all__ = [
    "BatchLearner",
    "FTRLProximal",
    "Learner",
    "LogisticOGD",
    "OpBatch",
    "dump_learner",
    "load_learner",
    "make_learner",
]
