"""Everything that speaks to Redis, in one place.

- ``store``: :class:`RedisStore`, the Store interface on Redis (hashes per namespace, one
  ``MULTI``/``EXEC`` per commit);
- ``streams``: events on partitioned Redis Streams: publishing, partitioning, the reader of a
  consumer group;
- ``worker``: :class:`RedisWorker`, the runner that consumes partition streams into a Redis
  store, exactly once in effect;
- ``ops``: operating that path: lag and status, dead letters kept in the store, redrive;
- ``entrykey``: the keys of dead-letter and segment-change entries, and a reader that reads each
  once across lost Redis writes;
- ``fence``: :class:`FencedRedisStore`, commits fenced per Kafka partition, so that a worker
  that lost a partition cannot commit it (the Kafka and Flink runners' store);
- ``lease``: the writer lease that keeps one writer per Redis store
  (:func:`liveprofile.store.lock.writer_lock` takes it).

Nothing here is imported by ``liveprofile.redis`` itself: importing the package imports no
Redis client.
"""
