"""The Flink source's event time, bounded so that a far-future event moves no watermark.

Flink's watermark on the Kafka source (and, with ``run.partition_skew``, the alignment of its
partitions) follows the event time column of :func:`liveprofile.flink.job.source_ddl`. The
job's screening dead-letters an event dated too far ahead (``events.max_future``) before the
core sees it, but Flink computes its watermark from the records as they are read, before any
Python runs: this column keeps such an event out of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from liveprofile.config import PipelineConfig

if TYPE_CHECKING:
    from liveprofile.flink.job import FlinkSettings


def event_time_sql(settings: FlinkSettings) -> str:
    """The source's event time: the record's ``ts`` when it is epoch seconds, else its Kafka
    timestamp; but a ``ts`` more than ``events.max_future`` ahead of the Kafka timestamp counts
    as the epoch, so that one event dated 2099 does not move the partition's watermark (nor,
    with the alignment, pause the partition behind it). Only Flink's watermark reads this
    column: the event is dead-lettered by the job's screening, as every runner's
    (:func:`liveprofile.kafka.partition.apply_records`).

    >>> from liveprofile.flink.job import FlinkSettings
    >>> print(event_time_sql(FlinkSettings("b:9092", "t", "redis://r")))  # doctest: +ELLIPSIS
    CASE WHEN TO_TIMESTAMP_LTZ(...) > TIMESTAMPADD(SECOND, 86400, `kafka_ts`) THEN ...
    """
    skew = round(PipelineConfig.from_toml(settings.config_toml).events.max_future_s)
    parsed = (
        "TO_TIMESTAMP_LTZ(CAST(TRY_CAST(JSON_VALUE(CAST(`value` AS STRING), '$.ts') AS DOUBLE)"
        " * 1000 AS BIGINT), 3)"
    )
    return (
        f"CASE WHEN {parsed} > TIMESTAMPADD(SECOND, {skew}, `kafka_ts`) "
        f"THEN TO_TIMESTAMP_LTZ(0, 3) ELSE COALESCE({parsed}, `kafka_ts`) END"
    )
