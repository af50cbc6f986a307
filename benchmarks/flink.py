"""Events/s of the Flink job (``liveprofile flink run``) against the Kafka worker on one topic.

From the repository root, with Redis on 127.0.0.1:6379 (fresh key prefixes, deleted after)::

    .venv/bin/python benchmarks/flink.py --users 4000 --rounds 2

Starts its own Kafka broker (a spare port, a temporary data directory), publishes synthetic
events (``liveprofile.datasets.synthetic``, keyed by user) to a topic of ``--partitions``
partitions, then runs, interleaved, ``--rounds`` times each: one ``liveprofile worker --kafka``
process and one ``liveprofile flink run --until-caught-up`` process (a local mini-cluster), each
into a store of its own. This process polls each store's per-partition checkpoints every 50 ms:
events/s is the records committed divided by the time from the first commit to the last (the
job's start-up, about 10 s for Flink, is reported apart). The broker, Redis, the runner and
this process share the machine's cores.

Prints one JSON line per round (each runner's events/s and start-up) and a last line with all
rounds; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
import redis

from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.engine.state import Checkpoint
from liveprofile.kafka.broker import Broker, free_port
from liveprofile.kafka.partition import partition_scope
from liveprofile.kafka.producer import KafkaPublisher

URL = "redis://127.0.0.1:6379/0"


def committed(client: redis.Redis, prefix: str, topic: str, partitions: int) -> int:
    total = 0
    for p in range(partitions):
        blob = client.hget(f"{prefix}:meta", f"checkpoint@{partition_scope(topic, p)}")
        if blob is not None:
            c = msgspec.msgpack.decode(bytes(blob), type=Checkpoint)
            total += c.events + c.duplicates + c.dead_letters
    return total


def timed(
    args: list[str], client: redis.Redis, prefix: str, topic: str, n: int, parts: int
) -> dict[str, float]:
    began = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = None
    try:
        while True:
            done = committed(client, prefix, topic, parts)
            now = time.perf_counter()
            if first is None and done > 0:
                first = (now, done)
            if done >= n:
                break
            if proc.poll() is not None and done < n:
                raise SystemExit(f"{args[3]} ended at {done} of {n} records")
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(120)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
    assert first is not None
    seconds = now - first[0]
    return {
        "startup_s": round(first[0] - began, 2),
        "seconds": round(seconds, 2),
        "events_per_s": round((n - first[1]) / seconds),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--users",
        type=int,
        default=4000,
        help="users of the synthetic events published (28 days, seed 3) (default: %(default)s)",
    )
    ap.add_argument(
        "--partitions", type=int, default=2, help="partitions of the topic (default: %(default)s)"
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="interleaved rounds, one worker run and one Flink run each (default: %(default)s)",
    )
    ap.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="the Kafka worker's --batch-size: most events per batch (default: %(default)s)",
    )
    ap.add_argument(
        "--batch-ms",
        type=int,
        default=200,
        help="the Flink job's --batch-ms: micro-batch window per partition, in ms "
        "(default: %(default)s)",
    )
    ap.add_argument(
        "--parallelism",
        type=int,
        default=1,
        help="the Flink job's --parallelism (default: %(default)s)",
    )
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.jsonl"
        write_jsonl(events, SyntheticConfig(users=opts.users, seed=3))
        lines = [x for x in events.read_bytes().splitlines() if x.strip()]
        broker = Broker(Path(tmp) / "kafka", port=free_port(), controller_port=free_port())
        broker.start()
        try:
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            pub = KafkaPublisher(broker.bootstrap, topic, partitions=opts.partitions)
            pub.extend(lines)
            client = redis.Redis.from_url(URL)
            cli = [sys.executable, "-m", "liveprofile.cli"]
            results: dict[str, list[dict[str, float]]] = {"worker": [], "flink": []}
            for r in range(opts.rounds):
                prefix = f"benchw-{topic}-{r}"
                worker = [*cli, "worker", "--kafka", broker.bootstrap, "--topic", topic]
                worker += ["--group", prefix, "--redis", URL, "--prefix", prefix]
                worker += ["--batch-size", str(opts.batch_size)]
                results["worker"].append(
                    timed(worker, client, prefix, topic, len(lines), opts.partitions)
                )
                prefix = f"benchf-{topic}-{r}"
                job = [*cli, "flink", "run", "--kafka", broker.bootstrap, "--topic", topic]
                job += ["--redis", URL, "--prefix", prefix, "--batch-ms", str(opts.batch_ms)]
                job += ["--parallelism", str(opts.parallelism), "--until-caught-up"]
                results["flink"].append(
                    timed(job, client, prefix, topic, len(lines), opts.partitions)
                )
                print(
                    json.dumps({"round": r, **{k: v[-1] for k, v in results.items()}}), flush=True
                )
            print(json.dumps({"records": len(lines), "partitions": opts.partitions, **results}))
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
