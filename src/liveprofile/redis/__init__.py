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
- ``changes``: the stream of segment changes the worker appends with its commits;
- ``privacy``: erasures queued to the users' partition streams, and the segment changes about
  a user read back for an export;
- ``sink``: the HTTP collector's sink that appends what it accepted to the partition streams;
- ``fence``: :class:`FencedRedisStore`, commits fenced per Kafka partition, so that a worker
  that lost a partition cannot commit it (the Kafka and Flink runners' store), and the event
  time each partition's batch in flight reaches (for the runners' alignment);
- ``modeldelta``: a model kept as a whole checkpoint plus the deltas written since;
- ``packed``: a shared model's coordinates read and merged as packed arrays;
- ``workers``: who writes a prefix (one worker per scope, which are alive) and the one model
  per task they train together;
- ``acks``: stream entries acknowledged only while the store holds the commit that applied
  them; ``outage``: riding out a Redis store that cannot be reached for a while;
- ``lease``: the writer lease that keeps one writer per Redis store
  (:func:`liveprofile.store.lock.writer_lock` takes it through ``RedisStore.writer_lease``).

Outside this package only the commands that open a client import redis-py
(``tests/test_layout.py`` checks it).

Nothing here is imported by ``liveprofile.redis`` itself: importing the package imports no
Redis client.
"""
