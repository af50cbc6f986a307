"""Scaling out with Kafka: one worker against two, one shared model against a model per partition.

From the repository root, with Redis on 127.0.0.1:6379 (fresh key prefixes are used and
deleted)::

    .venv/bin/python benchmarks/scaleout.py --json benchmarks/scaleout_results.json

This starts its own Kafka broker (``liveprofile.kafka.Broker``, spare ports, a temporary data
directory) and publishes the Complete Journey's transactions (``--limit`` of them, in time
order, keyed by household) to one topic of ``--partitions`` partitions. Each setup then reads
the whole topic with its own consumer group into its own store, with the Complete Journey's
quick-start config (the ``repurchase`` task, FTRL) and batches of ``--batch-size`` events:

* ``one``: one worker, one shared model per task (``run.shared_model = true``, the default);
* ``two-merged``: two workers at once, one shared model per task;
* ``two-separate``: two workers at once, one model per partition (``run.shared_model =
  false``, the behaviour before shared models);
* ``flink-one`` and ``flink-two``: the Flink job (``liveprofile flink run --until-caught-up``,
  a local mini-cluster, micro-batches of ``--flink-batch-ms``) at parallelism 1 and 2, one
  shared model per task; the job aligns its partitions with Flink's watermark alignment
  (``--partition-skew``) and, at parallelism 1, in its Python side with the Kafka workers' gate
  too (``--model-staleness`` applies there; before 2026-12-03 Flink's alignment only). Needs
  the ``flink`` extra and ``liveprofile flink fetch``; not run by default.

Workers are processes of their own (``KafkaWorker`` in ``python -c``, so two workers can use
two cores), started with ``PYTHONPATH`` set to this tree's ``src``; with ``--baseline-src PATH``
every setup also runs with the source tree at ``PATH`` (e.g. a checkout of main), the two
alternating in each round (which goes first alternates too), so a shared machine's load falls on
both alike. A setup's events/s are its events over the time from its first commit until every
partition's offset in the store reached the end of the topic; its mid-run events/s are those
between 20 % and 80 % of the topic's records committed (start-up and the last partitions'
tails left out); its start-up is the time from starting the workers to 20 % committed. Its
AUC and log loss are the prequential metrics of all partitions added up (each
example is predicted before it is learned from; ``kafka.status.merged_metrics``). Every
partition sees the same events in every setup, so the setups differ only by the model. The
setups run ``--rounds`` times, interleaved, since the machine may be shared.

Besides events/s, each run reports its workers' CPU per event (for Flink the job's whole process
tree: the client, the JVM and its Python workers), the cores they kept busy, and the
cores they wanted but did not get (time their threads were ready to run and waited for a core,
from ``/proc``): when busy plus wanted is near the number of workers they were starved by other
processes on the machine, not waiting for Kafka, Redis or each other.

Prints one JSON line for the publishing and one per setup run (events/s, AUC, log loss), then
per source tree and setup the median and range over the rounds of events/s, mid-run events/s,
start-up, cores busy and AUC (one JSON line each, and a table); ``--json`` also writes them,
with the settings, to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from liveprofile.config import PipelineConfig, RunConfig
from liveprofile.datasets.completejourney import (
    QUICKSTART_TOML,
    CompleteJourneySource,
    quickstart_config,
)
from liveprofile.events.schema import encode_event
from liveprofile.kafka.broker import Broker, free_port
from liveprofile.kafka.partition import partition_scope, source_name
from liveprofile.kafka.producer import KafkaPublisher
from liveprofile.kafka.status import merged_metrics
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.store.layout import read_checkpoint
from liveprofile.store.scoped import ScopedStore

#: setup -> (workers or Flink parallelism, shared model, engine)
SETUPS = {
    "one": (1, True, "kafka"),
    "two-merged": (2, True, "kafka"),
    "two-separate": (2, False, "kafka"),
    "flink-one": (1, True, "flink"),
    "flink-two": (2, True, "flink"),
}
#: the setups run when ``--setups`` is not given
DEFAULT_SETUPS = "one,two-merged,two-separate"


def publish(bootstrap: str, topic: str, limit: int | None, partitions: int) -> int:
    source = CompleteJourneySource(limit=limit)
    publisher = KafkaPublisher(bootstrap, topic, partitions=partitions, validate=False)
    lines = (encode_event(e) for batch in source.batches(0, 50_000) for e in batch.events)
    return publisher.extend(lines).published


def config(
    shared: bool, batch_size: int, skew: str = "1h", staleness: str | None = None
) -> PipelineConfig:
    base = quickstart_config()
    run = RunConfig(batch_size=batch_size, shared_model=shared, partition_skew=skew)
    if staleness is not None:
        run = msgspec.structs.replace(run, model_staleness=staleness)
    return msgspec.structs.replace(base, run=run)


def changed_run(cfg: PipelineConfig) -> dict[str, Any]:
    """``cfg``'s run settings that differ from the defaults (so a tree compared with
    ``--baseline-src`` that predates a setting still reads the config)."""
    defaults = msgspec.to_builtins(RunConfig())
    return {k: v for k, v in msgspec.to_builtins(cfg.run).items() if defaults.get(k) != v}


def config_json(cfg: PipelineConfig) -> str:
    """``cfg`` as JSON for a worker, with only :func:`changed_run` in its run section."""
    return json.dumps({**msgspec.to_builtins(cfg), "run": changed_run(cfg)})


#: one worker process: reads until the topic has been quiet for a few seconds (argv: config
#: JSON, bootstrap, topic, group, Redis URL, key prefix); kept to what every tree compared has
WORKER = """
import sys
import msgspec
from liveprofile.config import PipelineConfig
from liveprofile.kafka.worker import KafkaWorker
from liveprofile.redis.fence import FencedRedisStore

config_json, bootstrap, topic, group, url, prefix = sys.argv[1:]
cfg = msgspec.json.decode(config_json, type=PipelineConfig)
store = FencedRedisStore(url, prefix=prefix)
worker = KafkaWorker(cfg, store, bootstrap, topic, group, batch_size=cfg.run.batch_size)
worker.run(max_idle_polls=25)
store.close()
"""

#: this tree's sources (the workers of the setups run "branch")
SRC = Path(__file__).resolve().parent.parent / "src"


def start_worker(
    src: Path, cfg: PipelineConfig, bootstrap: str, topic: str, group: str, prefix: str
) -> subprocess.Popen[bytes]:
    """A worker process running the sources at ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    args = [config_json(cfg), bootstrap, topic, group, REDIS, prefix]
    return subprocess.Popen([sys.executable, "-c", WORKER, *args], env=env)


def flink_toml(cfg: PipelineConfig) -> str:
    """``cfg`` (the quick-start config with a run section of this benchmark's) as TOML for the
    Flink job, which reads its config as a TOML file."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in changed_run(cfg).items()]
    return QUICKSTART_TOML.split("[run]")[0] + "[run]\n" + "\n".join(lines) + "\n"


def start_flink(
    src: Path,
    cfg: PipelineConfig,
    bootstrap: str,
    topic: str,
    prefix: str,
    parallelism: int,
    batch_ms: int,
) -> subprocess.Popen[bytes]:
    """A ``liveprofile flink run --until-caught-up`` process running the sources at ``src``."""
    toml = Path(tempfile.mkdtemp(prefix="scaleout-flink-")) / "config.toml"
    toml.write_text(flink_toml(cfg))
    env = {**os.environ, "PYTHONPATH": str(src)}
    args = ["flink", "run", "--kafka", bootstrap, "--topic", topic, "--redis", REDIS]
    args += ["--prefix", prefix, "--config", str(toml), "--parallelism", str(parallelism)]
    args += ["--batch-ms", str(batch_ms), "--until-caught-up"]
    return subprocess.Popen([sys.executable, "-m", "liveprofile.cli", *args], env=env)


def tree(pid: int | None) -> list[int]:
    """Process ``pid`` and its descendants, from ``/proc``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [] if pid is None else [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) of process ``pid`` and its descendants so far, from ``/proc``
    (0 for those gone)."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def runqueue_seconds(pid: int | None) -> float:
    """Time the threads of process ``pid`` and its descendants have spent ready to run but
    waiting for a core, so far (``/proc/PID/task/*/schedstat``; 0: gone or not available)."""
    total = 0
    for p in tree(pid):
        for path in Path(f"/proc/{p}/task").glob("*/schedstat"):
            try:
                total += int(path.read_text().split()[1])
            except (FileNotFoundError, IndexError, ValueError):
                continue
    return total / 1e9


REDIS = os.environ.get("LIVEPROFILE_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def progress(store: FencedRedisStore, topic: str, partitions: int) -> tuple[int, int]:
    """(records committed, events committed) over the topic's partitions."""
    offsets = events = 0
    for p in range(partitions):
        ckpt = read_checkpoint(ScopedStore(store, partition_scope(topic, p)))
        offsets += ckpt.offsets.get(source_name(topic, p), 0)
        events += ckpt.events
    return offsets, events


def setup(
    args: argparse.Namespace,
    bootstrap: str,
    topic: str,
    total: int,
    name: str,
    source: str = "branch",
    src: Path = SRC,
) -> dict[str, Any]:
    workers, shared, engine = SETUPS[name]
    prefix = f"scaleout-{name}-{uuid.uuid4().hex[:6]}"
    store = FencedRedisStore(REDIS, prefix=prefix)
    cfg = config(shared, args.batch_size, args.partition_skew, args.model_staleness)
    launched = time.perf_counter()
    if engine == "flink":
        procs = [start_flink(src, cfg, bootstrap, topic, prefix, workers, args.flink_batch_ms)]
    else:
        procs = [start_worker(src, cfg, bootstrap, topic, prefix, prefix) for _ in range(workers)]
    first = None
    cpu0 = queued0 = 0.0
    marks: dict[float, tuple[float, int]] = {}  # share of the records -> (time, events) first seen
    while True:
        done, events = progress(store, topic, args.partitions)
        now = time.perf_counter()
        if done and first is None:
            first = now
            cpu0 = sum(cpu_seconds(proc.pid) for proc in procs)
            queued0 = sum(runqueue_seconds(proc.pid) for proc in procs)
        for share in (0.2, 0.8):
            if share not in marks and done >= share * total:
                marks[share] = (now, events)
        if done >= total:
            break
        if (
            any(proc.poll() is not None for proc in procs)
            and progress(store, topic, args.partitions)[0] < total
        ):
            raise RuntimeError(f"a worker of {name} ({source}) ended before the topic was read")
        time.sleep(0.05)
    finished = time.perf_counter()
    cpu = sum(cpu_seconds(proc.pid) for proc in procs) - cpu0
    queued = sum(runqueue_seconds(proc.pid) for proc in procs) - queued0
    load = os.getloadavg()[0]
    _, events = progress(store, topic, args.partitions)
    for proc in procs:
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    tasks = [t.name for t in cfg.tasks]
    metrics = merged_metrics(store, topic, list(range(args.partitions)), tasks)
    store.drop()
    store.close()
    assert first is not None
    (t20, e20), (t80, e80) = marks[0.2], marks[0.8]
    return {
        "setup": name,
        "source": source,
        "engine": engine,
        "workers": workers,
        "shared_model": shared,
        "events": events,
        "seconds": round(finished - first, 2),
        "events_per_s": round(events / (finished - first), 1),
        # events/s between 20 % and 80 % of the records committed, and the time from starting
        # the workers to 20 % (their start-up: imports, compiling, joining the group)
        "mid_events_per_s": round((e80 - e20) / (t80 - t20), 1) if t80 > t20 else None,
        "startup_s": round(t20 - launched, 2),
        # the workers' CPU (user + system) over the timed window, per event and as a share of
        # the window's wall time (1.0: one core busy all along), and the machine's load then
        "worker_cpu_us_per_event": round(cpu / events * 1e6, 2),
        "worker_cores_busy": round(cpu / (finished - first), 2),
        # the time the workers' threads were ready to run but waited for a core (other
        # processes had them), in the same unit: busy + this near the workers' count means
        # they were starved of CPU, not waiting for Kafka, Redis or each other
        "worker_cores_wanted_not_had": round(queued / (finished - first), 2),
        "load_average": round(load, 1),
        "tasks": {
            t: {
                "auc": None if m["auc"] is None else round(m["auc"], 5),
                "logloss": None if m["logloss"] is None else round(m["logloss"], 5),
                "n": m["n"],
                "learned": m.get("shared_model_learned"),
            }
            for t, m in metrics.items()
        },
    }


#: the figures summed up over the rounds: (name, how to read it from a run)
SUMMED = {
    "events_per_s": lambda run: run["events_per_s"],
    "mid_events_per_s": lambda run: run["mid_events_per_s"],
    "startup_s": lambda run: run["startup_s"],
    "worker_cores_busy": lambda run: run["worker_cores_busy"],
    "auc": lambda run: next(iter(run["tasks"].values()))["auc"],
}


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per source tree and setup, the median and range over the rounds of each figure."""
    out = []
    for key in dict.fromkeys((run["source"], run["setup"]) for run in runs):
        mine = [run for run in runs if (run["source"], run["setup"]) == key]
        row: dict[str, Any] = {"source": key[0], "setup": key[1], "rounds": len(mine)}
        for name, read in SUMMED.items():
            values = [v for v in map(read, mine) if v is not None]
            if values:
                row[name] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                }
        out.append(row)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table: median [min-max] of each figure."""

    def cell(row: dict[str, Any], name: str, digits: int) -> str:
        if name not in row:
            return "-"
        m = row[name]
        return f"{m['median']:,.{digits}f} [{m['min']:,.{digits}f}-{m['max']:,.{digits}f}]"

    lines = [
        "| source | setup | events/s | mid-run events/s | start-up s | cores busy | AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['source']} | {row['setup']} | {cell(row, 'events_per_s', 0)} "
            f"| {cell(row, 'mid_events_per_s', 0)} | {cell(row, 'startup_s', 1)} "
            f"| {cell(row, 'worker_cores_busy', 2)} | {cell(row, 'auc', 5)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="Complete Journey transactions published, in time order (default: all)",
    )
    parser.add_argument(
        "--partitions", type=int, default=4, help="partitions of the topic (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=5000,
        help="most events per worker batch (run.batch_size) (default: %(default)s)",
    )
    parser.add_argument(
        "--partition-skew",
        default="1h",
        help="run.partition_skew: how far a partition may run ahead of the slowest one "
        "with a shared model; empty: no wait (default: %(default)s)",
    )
    parser.add_argument(
        "--model-staleness",
        default=None,
        help="run.model_staleness: how far past another partition's committed watermark its "
        "batch in flight counts for the alignment; empty: all of it (default: the config's)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="interleaved runs of every setup (default: %(default)s)",
    )
    parser.add_argument(
        "--setups",
        default=DEFAULT_SETUPS,
        help=f"comma-separated setups to run, of {', '.join(SETUPS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--flink-batch-ms",
        type=int,
        default=200,
        help="the Flink setups' --batch-ms: micro-batch window per partition (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="also run every setup with the sources at this path (a tree's src, e.g. a "
        "checkout of main), alternating with this tree's in each round",
    )
    parser.add_argument(
        "--json", type=Path, help="also write the runs and settings to this JSON file"
    )
    args = parser.parse_args()
    unknown = set(args.setups.split(",")) - set(SETUPS)
    if unknown:
        parser.error(f"unknown setups: {', '.join(sorted(unknown))}")
    tmp = Path(tempfile.mkdtemp(prefix="scaleout-"))
    broker = Broker(tmp / "kafka", port=free_port(), controller_port=free_port(), heap_mb=1024)
    broker.start()
    topic = "completejourney"
    results: dict[str, Any] = {"runs": []}
    try:
        started = time.perf_counter()
        total = publish(broker.bootstrap, topic, args.limit, args.partitions)
        results["published"] = total
        print(json.dumps({"published": total, "seconds": round(time.perf_counter() - started)}))
        sources = [("branch", SRC)]
        if args.baseline_src is not None:
            sources.append(("baseline", args.baseline_src.resolve()))
        for i in range(args.rounds):
            for name in args.setups.split(","):
                for source, src in sources if i % 2 == 0 else sources[::-1]:
                    row = setup(args, broker.bootstrap, topic, total, name, source, src)
                    print(json.dumps(row), flush=True)
                    results["runs"].append(row)
    finally:
        broker.stop()
    results["summary"] = summary(results["runs"])
    for row in results["summary"]:
        print(json.dumps(row))
    print(table(results["summary"]))
    results["settings"] = {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"
    }
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
