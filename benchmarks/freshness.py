"""Freshness: how long from appending an event to Kafka until the profile change is readable.

From the repository root, with Redis on 127.0.0.1:6379 (a fresh key prefix is used and deleted)::

    .venv/bin/python benchmarks/freshness.py --json benchmarks/freshness_results.json

This starts its own Kafka broker (``liveprofile.kafka.Broker``, a spare port, a temporary data
directory), one ``liveprofile worker --kafka`` process (batches of ``--batch-size`` events at
most, closed after ``--max-batch-delay``) and one ``liveprofile serve`` process (the read API)
on the same Redis store. For each rate of ``--rates`` (events/s), a fresh topic of
``--partitions`` partitions (default 1: every batch commits its partition's model, so more
partitions mean more commits per poll) is fed for ``--seconds`` seconds by a paced, idempotent
producer (``acks=all``) with synthetic funnel events (``liveprofile.datasets.synthetic``,
re-stamped so that every event id is new, with users of the phase's own); 20 times a second one of
them is a *probe*: the first event of a new user. A client polls the read API (``POST
/v1/profiles:batch``, every ``--poll-ms``, 5 ms by default) for the probes not seen yet; a
probe's freshness is the time from handing it to the producer to the first answer that holds
its profile. The worker's CPU time (user + system, from ``/proc``) over the phase, divided by
the events applied, gives its CPU per event; ``cores`` gives the cores the worker, ``serve``,
the broker and this process (producer and reader) kept busy on average; the worker's CPU is
also split by thread (its loop, librdkafka's threads, and the others: the thread that sends
commits in the background). ``--trace DIR`` has the
worker write its per-batch timings (``liveprofile.kafka.trace``; summarise them with
``benchmarks/batch_trace.py``), ``--worker-src`` runs another checkout's worker beside it.

Then ``--saturation`` events are appended first and the worker is timed from its first commit
until it has caught up: events/s at saturation, with the same batch limit.

The worker, the broker, Redis, the read API and this process share the machine's cores, so the
figures include their contention; on a busy machine run it again and compare side by side.

Prints one JSON line per rate (probes sent and seen, p50/p99/max freshness in ms, the worker's CPU
per event) and one for saturation; ``--json`` also writes them, with the settings, to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import redis
from confluent_kafka import Producer

from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.kafka.broker import Broker, free_port
from liveprofile.kafka.producer import ensure_topics, producer_config
from liveprofile.kafka.status import kafka_status
from liveprofile.redis.fence import FencedRedisStore

TOKEN = "freshness"
PROBES_PER_S = 20


def event_pool(users: int, days: int) -> list[dict[str, Any]]:
    """Synthetic funnel events, in time order, to cycle through."""
    return list(generate(SyntheticConfig(users=users, days=days, seed=3)))


class Feed:
    """Produces ``rate`` events/s for ``seconds``, probes among them, from the pool in order."""

    def __init__(self, bootstrap: str, topic: str, pool: list[dict[str, Any]], tag: str) -> None:
        self.producer = Producer(producer_config(bootstrap, **{"linger.ms": 2}))
        self.topic, self.pool, self.tag = topic, pool, tag
        self.sent = 0
        self.reads: list[float] = []  # how long each of the reader's requests took
        self.probes: dict[str, float] = {}  # user -> time handed to the producer
        self.span = pool[-1]["ts"] - pool[0]["ts"] + 1.0

    def _record(self, i: int) -> tuple[bytes, bytes]:
        base = self.pool[i % len(self.pool)]
        cycle = i // len(self.pool)
        user = f"{self.tag}-{base['user_id']}"  # each phase's users are its own
        ts = base["ts"] + cycle * self.span
        rec = {**base, "event_id": f"{self.tag}-{i}", "user_id": user, "ts": ts}
        return user.encode(), msgspec.json.encode(rec)

    def run(self, rate: float, seconds: float, start_at: int = 0) -> None:
        encode = msgspec.json.encode
        total = int(rate * seconds)
        every = max(1, int(rate / PROBES_PER_S))
        began = time.perf_counter()
        for n in range(total):
            due = began + n / rate
            if n % 200 == 0:
                ahead = due - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            i = start_at + n
            key, value = self._record(i)
            if n % every == every - 1:  # a probe: the same event from a user never seen
                user = f"probe-{self.tag}-{i}"
                rec = msgspec.json.decode(value)
                rec["user_id"] = user
                self._produce(user.encode(), encode(rec))
                self.probes[user] = time.perf_counter()
            else:
                self._produce(key, value)
            self.sent += 1
        self.producer.flush(60)

    def _produce(self, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value, key)
                self.producer.poll(0)
                return
            except BufferError:
                self.producer.poll(0.01)


def poll_probes(
    base: str, feed: Feed, done: threading.Event, seen: dict[str, float], every: float
) -> None:
    """Ask the read API for the probes not seen yet; after ``done``, until all are seen (or a
    minute has passed). Records when each probe's profile first appears."""
    give_up = float("inf")
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        while time.perf_counter() < give_up:
            if done.is_set():
                if len(seen) >= len(feed.probes):
                    return
                give_up = min(give_up, time.perf_counter() + 60)
            waiting = [u for u in list(feed.probes) if u not in seen][:1000]
            if waiting:
                asked = time.perf_counter()
                answer = client.post("/v1/profiles:batch", json={"users": waiting}, timeout=30)
                now = time.perf_counter()
                feed.reads.append(now - asked)
                for user in answer.json()["profiles"]:
                    seen[user] = now - feed.probes[user]
            time.sleep(every)


def cpu_seconds(pid: int, task: int | None = None) -> float:
    """CPU seconds (user + system) of process ``pid``, or of its thread ``task``."""
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of process ``pid``'s threads, by part: ``main`` (the worker loop),
    ``kafka`` (librdkafka's threads, named ``rdk:...``) and ``other`` (the thread that sends
    commits in the background, and any other Python thread). Threads that ended are missing."""
    out = {"main": 0.0, "kafka": 0.0, "other": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            spent = cpu_seconds(pid, int(task.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
        part = "main" if int(task.name) == pid else "kafka" if name.startswith("rdk:") else "other"
        out[part] += spent
    return out


def wait_caught_up(
    bootstrap: str, topic: str, store: FencedRedisStore, timeout: float, worker: Any
) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker of {topic} exited ({worker.returncode}); see its log")
        try:
            status = kafka_status(bootstrap, topic, topic, store)
            if all((p.store_offset or 0) == p.end_offset for p in status.partitions):
                return time.perf_counter()
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the worker did not catch up on {topic} within {timeout:.0f} s")


def start_worker(args: argparse.Namespace, bootstrap: str, topic: str, log: Path) -> Any:
    cmd = [sys.executable, "-m", "liveprofile.cli", "worker", "--kafka", bootstrap]
    cmd += ["--topic", topic, "--group", topic, "--redis", args.redis, "--prefix", args.prefix]
    cmd += ["--batch-size", str(args.batch_size), "--max-batch-delay", str(args.max_batch_delay)]
    env = dict(os.environ)
    if args.worker_src is not None:  # another checkout's code, to compare side by side
        env["PYTHONPATH"] = str(args.worker_src)
    if args.trace is not None:  # per-batch timings (liveprofile.kafka.trace)
        args.trace.mkdir(parents=True, exist_ok=True)
        from liveprofile.kafka.trace import TRACE_ENV  # here: kafka_apply's baselines lack it

        env[TRACE_ENV] = str(args.trace / f"{topic}.jsonl")
    with open(log, "ab") as err:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)


def phase(
    args: argparse.Namespace,
    broker: Broker,
    pool: list[dict[str, Any]],
    rate: int,
    base: str,
    tmp: Path,
    store: FencedRedisStore,
    others: dict[str, int],
) -> dict[str, Any]:
    bootstrap = broker.bootstrap
    topic = f"fresh-{rate}"
    ensure_topics(bootstrap, {topic: args.partitions})
    worker = start_worker(args, bootstrap, topic, tmp / f"{topic}.log")
    feed = Feed(bootstrap, topic, pool, f"r{rate}")
    try:
        feed.run(50, 2.0)  # warm-up: the worker joins the group and loads its code
        wait_caught_up(bootstrap, topic, store, 120, worker)
        feed.probes.clear()
        seen: dict[str, float] = {}
        done = threading.Event()
        every = args.poll_ms / 1000.0
        poller = threading.Thread(target=poll_probes, args=(base, feed, done, seen, every))
        cpu0, sent0 = cpu_seconds(worker.pid), feed.sent
        threads0 = thread_seconds(worker.pid)
        others0 = {name: cpu_seconds(pid) for name, pid in others.items()}
        poller.start()
        began = time.perf_counter()
        feed.run(rate, args.seconds, start_at=feed.sent)
        appended = time.perf_counter() - began
        wait_caught_up(bootstrap, topic, store, 300, worker)
        done.set()
        poller.join()
        cpu = cpu_seconds(worker.pid) - cpu0
        threads = {k: v - threads0[k] for k, v in thread_seconds(worker.pid).items()}
        spent = {name: cpu_seconds(pid) - others0[name] for name, pid in others.items()}
        wall = time.perf_counter() - began
    finally:
        worker.terminate()
        worker.wait(60)
    events = feed.sent - sent0
    lat = np.array(sorted(seen.values())) * 1000.0
    return {
        "rate": rate,
        "achieved_rate": round(events / appended, 1),
        "events": events,
        "probes": len(feed.probes),
        "probes_seen": len(seen),
        "reads": len(feed.reads),
        "read_ms": _spread(feed.reads),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "max_ms": round(float(lat.max()), 1) if len(lat) else None,
        "worker_cpu_us_per_event": round(cpu / events * 1e6, 2),
        # the worker's CPU per event by thread: its loop, librdkafka's, the commit thread
        "worker_threads_us_per_event": {k: round(v / events * 1e6, 2) for k, v in threads.items()},
        # cores each process kept busy on average, from the first event to the last probe seen
        "cores": {"worker": round(cpu / wall, 2)}
        | {name: round(v / wall, 2) for name, v in spent.items()},
        # and their CPU per event appended (serve's and the reader's depend on --poll-ms)
        "cpu_us_per_event": {name: round(v / events * 1e6, 1) for name, v in spent.items()},
    }


def _spread(seconds: list[float]) -> dict[str, float] | None:
    if not seconds:
        return None
    a = np.array(seconds) * 1000.0
    return {q: round(float(np.percentile(a, v)), 1) for q, v in (("p50", 50), ("p99", 99))} | {
        "max": round(float(a.max()), 1)
    }


def saturation(
    args: argparse.Namespace,
    bootstrap: str,
    pool: list[dict[str, Any]],
    tmp: Path,
    store: FencedRedisStore,
) -> dict[str, Any]:
    topic = "fresh-saturation"
    ensure_topics(bootstrap, {topic: args.partitions})
    feed = Feed(bootstrap, topic, pool, "sat")
    feed.run(1e9, args.saturation / 1e9)  # as fast as the producer goes
    worker = start_worker(args, bootstrap, topic, tmp / f"{topic}.log")
    try:
        client = redis.Redis.from_url(args.redis)
        while not any(  # the worker's first commit
            k.startswith(f"checkpoint@{topic}.".encode())
            for k in client.hkeys(f"{args.prefix}:meta")
        ):
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited ({worker.returncode}); see its log")
            time.sleep(0.01)
        began = time.perf_counter()
        cpu0 = cpu_seconds(worker.pid)
        ended = wait_caught_up(bootstrap, topic, store, 600, worker)
        cpu = cpu_seconds(worker.pid) - cpu0
        client.close()
    finally:
        worker.terminate()
        worker.wait(60)
    return {
        "events": feed.sent,
        "events_per_s": round(feed.sent / (ended - began), 1),
        "worker_cpu_us_per_event": round(cpu / feed.sent * 1e6, 2),
        "note": "timed from the first commit, so slightly above the true rate",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rates",
        default="1000,10000,20000,50000",
        help="comma-separated producer rates in events/s, one phase each (default: %(default)s)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="how long each rate's phase feeds the topic, in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="partitions of each phase's topic; each batch commits its partition's model "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=5000,
        help="the worker's --batch-size: most events per batch (default: %(default)s)",
    )
    parser.add_argument(
        "--max-batch-delay",
        type=float,
        default=0.2,
        help="the worker's --max-batch-delay: seconds a batch waits to fill before it is "
        "committed (default: %(default)s)",
    )
    parser.add_argument(
        "--saturation",
        type=int,
        default=300_000,
        help="events appended up front for the saturation run, then the worker is timed until "
        "it catches up; 0 skips it (default: %(default)s)",
    )
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/0",
        help="Redis URL of the profile store (default: %(default)s)",
    )
    parser.add_argument(
        "--prefix",
        default=f"freshness-{uuid.uuid4().hex[:8]}",
        help="Redis key prefix, deleted at the end (default: a fresh freshness-XXXXXXXX)",
    )
    parser.add_argument(
        "--poll-ms",
        type=float,
        default=5.0,
        help="ms the reader sleeps between two reads of the probes not seen yet "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--worker-src",
        type=Path,
        help="run the worker from this source directory (PYTHONPATH), e.g. another commit's "
        "src/ exported with git archive, to compare side by side",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        help="write the worker's per-batch timings to DIR/TOPIC.jsonl "
        "(summarise them with benchmarks/batch_trace.py)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        help="also write the phases, saturation, settings and machine to this JSON file",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the broker on the way out
    pool = event_pool(2000, 14)
    tmp = Path(tempfile.mkdtemp(prefix="freshness-"))
    broker = Broker(tmp / "kafka", port=free_port(), controller_port=free_port(), heap_mb=1024)
    broker.start()
    store = FencedRedisStore(args.redis, prefix=args.prefix)
    port = free_port()
    serve = [sys.executable, "-m", "liveprofile.cli", "serve", "--port", str(port)]
    serve += ["--store", f"{args.redis}?prefix={args.prefix}"]
    store.setup()
    env = {**os.environ, "LIVEPROFILE_READ_TOKEN": TOKEN}
    with open(tmp / "serve.log", "ab") as log:
        server = subprocess.Popen(serve, stdout=log, stderr=log, env=env)
    base = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {"phases": []}
    try:
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        for rate in (int(r) for r in args.rates.split(",")):
            others = {"serve": server.pid, "broker": broker.pid() or 0, "this": os.getpid()}
            row = phase(args, broker, pool, rate, base, tmp, store, others)
            print(json.dumps(row))
            results["phases"].append(row)
        if args.saturation:
            results["saturation"] = saturation(args, broker.bootstrap, pool, tmp, store)
            print(json.dumps(results["saturation"]))
    finally:
        server.terminate()
        server.wait(60)
        broker.stop()
        store.drop()
        store.close()
    results["settings"] = {
        k: v
        for k, v in vars(args).items()
        if k not in ("json", "prefix", "redis", "trace", "worker_src")
    }
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
