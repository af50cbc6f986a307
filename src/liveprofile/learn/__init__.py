"""Online learning: learners, labels (immediate and delayed), prequential metrics."""

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
