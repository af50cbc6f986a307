"""Ranker rounds on a store kept per partition: the Kafka workers and the Flink job.

A store fed by Kafka partitions holds one learned ranker per task (``ranker/TASK``, shared by
every partition, see :func:`~liveprofile.store.layout.shared_meta`), which the recommender of
the read API ranks with. With ``ranker.every`` set, the rounds that teach it
(:class:`~liveprofile.serving.ranktrain.PipelineRanker`, as a replay runs them) are run by the
owner of partition :data:`LEAD_PARTITION` only, over that partition's committed batches:

* a round's time is partition 0's event time, and the users it keeps are partition 0's users
  active since the last round (a seeded sample). A user's events all lie in one partition, so
  what those users buy next is all seen there;
* their candidates and features are read from the whole store as the read API reads it
  (:class:`~liveprofile.serving.partitions.PartitionedView`: item statistics, popularity and
  the shared model of every partition);
* the ranker is saved only while partition 0's fence is still at its owner's last commit
  (:meth:`~liveprofile.redis.fence.FencedRedisStore.commit_meta_if_owner`), so a worker that
  lost partition 0 cannot overwrite what the new owner learned, and two workers never both
  read, learn and write the ranker;
* a round's reads and its save wait out a store that cannot be reached (the runner's
  :class:`~liveprofile.redis.outage.StoreOutage`) and are tried again, so an outage neither
  loses the round nor ends the runner (the save writes the same blob under the same fence
  check, so trying it again is safe; a store that came back without the owner's last commit
  refuses it as a moved partition).

A round's kept rows wait in the owner's memory: when partition 0 moves (a rebalance, a crash, a
Flink restore) the open round is lost and the new owner opens one at its first round time, as a
resumed replay does. The rounds need the shared model (``run.shared_model``, the default):
with a model per partition the store has no one model to rank candidates with, and no rounds
run. Rounds see partition 0's users only, so a topic of many partitions learns from a share of
its users per round (``ranker.users`` of them at most, as in a replay).

>>> from liveprofile.config import PipelineConfig
>>> config = PipelineConfig.from_toml('[ranker]\\nevery = "1d"')
>>> LeadRounds.wanted(config), LeadRounds.wanted(PipelineConfig())
(True, False)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from liveprofile.config import PipelineConfig
from liveprofile.errors import LiveprofileError
from liveprofile.events.sources import Batch
from liveprofile.redis.fence import FencedOut, FencedRedisStore
from liveprofile.redis.outage import PatientStore, StoreOutage
from liveprofile.serving.learned import Ranker
from liveprofile.serving.partitions import PartitionedView
from liveprofile.serving.ranktrain import PipelineRanker
from liveprofile.store.base import Store
from liveprofile.store.layout import ranker_meta

log = logging.getLogger("liveprofile")

#: the partition whose owner runs the ranker rounds
LEAD_PARTITION = 0


class LeadRounds:
    """The ranker rounds of one runner (a Kafka worker, a Flink subtask): active while it owns
    partition :data:`LEAD_PARTITION`, fed with that partition's committed batches."""

    def __init__(
        self, store: FencedRedisStore, config: PipelineConfig, outage: StoreOutage | None = None
    ) -> None:
        self.store = store
        self.config = config
        #: the rounds' reads and saves wait out an outage with this backoff
        self.patient = PatientStore(store, outage or StoreOutage(store.url))
        self.trainer: PipelineRanker | None = None
        #: (scope, checkpoint sequence) of partition 0's last commit by this runner
        self._owner: tuple[str, int] | None = None
        #: rounds run and what they learned, over every stint as partition 0's owner
        self.rounds = 0
        self.users = 0
        self.failed = 0
        if config.ranker.every_s > 0 and not config.run.shared_model:
            log.warning("ranker.every is ignored with run.shared_model = false (no one model)")

    @staticmethod
    def wanted(config: PipelineConfig) -> bool:
        """Whether ``config`` asks for ranker rounds that a partitioned runner can run."""
        return config.ranker.every_s > 0 and config.run.shared_model

    def committed(self, partition: int, scope: str, seq: int, batch: Batch) -> None:
        """Take in one batch this runner committed to ``partition`` (scope ``scope``, the
        checkpoint now at ``seq``); a round runs when partition 0's event time reached it."""
        if partition != LEAD_PARTITION or not self.wanted(self.config):
            return
        if self.trainer is None:
            self.trainer = PipelineRanker(
                PartitionedView(self.patient), self.config.ranker, self._save
            )
        self._owner = (scope, seq)
        trainer = self.trainer
        before = trainer.rounds, trainer.learned["users"]
        try:
            trainer.observe(batch)
        except FencedOut:
            log.warning(
                "partition %d moved during a ranker round: its new owner goes on", partition
            )
            self.trainer = None
            return
        except LiveprofileError as exc:  # the round is lost; the stream goes on
            log.warning("ranker round failed: %s", exc)
            self.failed += 1
            self.trainer = None
            return
        self.rounds += trainer.rounds - before[0]
        self.users += trainer.learned["users"] - before[1]

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget the open round when partition 0 leaves this runner."""
        if LEAD_PARTITION in set(partitions):
            self.trainer = None
            self._owner = None

    def _save(self, store: Store, task: str, ranker: Ranker) -> None:
        assert self._owner is not None
        scope, seq = self._owner
        blob = {ranker_meta(task): ranker.to_bytes()}
        self.patient.retried(lambda: self.store.commit_meta_if_owner(scope, seq, blob))

    def summary(self) -> dict[str, Any]:
        """Rounds run (each one opens the rows the next learns from), users learned from,
        rounds that failed."""
        return {"rounds": self.rounds, "users": self.users, "failed": self.failed}
