"""Read latency of one user's profile: in process, and over HTTP on loopback at a fixed rate.

From the repository root::

    python benchmarks/serving.py --json /tmp/serving.json

The store is a SQLite file filled once by a real replay (kept under ``--store`` and reused when
it is there): the first ``--limit`` Complete Journey transactions with ``quickstart_config()``
(default), or MovieLens ratings from ``--movielens DIR``.

(a) In process: ``--reads`` single-profile reads of random users (uniform over the store's
users) through the read API's own code path (the ``_Reader`` behind ``GET /v1/profiles/{user}``:
one store read, checkpoint and population blobs, decode, view), after 1,000 warm-up reads; wall
clock per read, and the thread's CPU time per read (which leaves out time the process spent
preempted, so it stays meaningful on a busy machine).

(b) HTTP: ``liveprofile serve`` as a subprocess (uvicorn, as users run it), driven open-loop at
``--rate`` requests/s for ``--duration`` seconds (after a one-second warm-up at the same rate)
by a small asyncio load generator in this process: request *i* is due at ``start + i / rate``
whatever happened to earlier ones, it goes out on the first free keep-alive connection of
``--connections``, and its latency is measured from the time it was due, not from when it was
sent, so a stalled server shows up in the figures instead of slowing the load down (no
coordinated omission). Requests are raw HTTP/1.1 on asyncio streams (uvloop when installed),
since a full client library would spend more CPU per request than the server does.

Prints (a)'s and (b)'s latency percentiles, the HTTP statuses, the server's CPU per request
and the load average; ``--json`` also writes the figures to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from http_server import start_cli_server

import liveprofile
from liveprofile.serving.profiles import ReadSettings, _Reader
from liveprofile.store import open_store

TOKEN = "bench-token"
WARMUP_S = 1.0


def build_store(args: argparse.Namespace) -> Path:
    """The replayed store (replayed now if the file is not there yet)."""
    store = Path(args.store)
    if store.exists():
        return store
    store.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.movielens:
        ratings = Path(args.movielens) / "ratings.csv"
        summary = liveprofile.replay(ratings, store=store, fmt="movielens", progress=False)
    else:
        from liveprofile.datasets.completejourney import CompleteJourneySource, quickstart_config

        summary = liveprofile.replay(
            CompleteJourneySource(limit=args.limit),
            store=store,
            config=quickstart_config(),
            progress=False,
        )
    print(
        f"replayed {summary['events']:,} events into {store} "
        f"({summary['profiles']:,} profiles) in {time.perf_counter() - t0:.0f} s"
    )
    return store


def users_of(store: Path) -> list[str]:
    backend = open_store(str(store), read_only=True)
    try:
        return [user for user, _ in backend.scan("profile")]
    finally:
        backend.close()


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] * 1000.0

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "p999_ms": at(0.999), "max_ms": at(1.0)}


def in_process(store: Path, users: list[str], reads: int, seed: int) -> dict[str, Any]:
    reader = _Reader(ReadSettings(str(store), TOKEN))
    reader.open()
    rng = random.Random(seed)
    try:
        for user in rng.choices(users, k=1000):
            reader.views([user])
        picks = rng.choices(users, k=reads)
        samples: list[float] = []
        cpu: list[float] = []
        clock, cpu_clock = time.perf_counter, time.thread_time
        for user in picks:
            t0, c0 = clock(), cpu_clock()
            view = reader.views([user])
            c1, t1 = cpu_clock(), clock()
            samples.append(t1 - t0)
            cpu.append(c1 - c0)
            assert user in view
    finally:
        reader.close()
    # CPU time of this thread per read: what the read costs, without time spent preempted by
    # other processes on a busy machine (wall-clock figures include that)
    cpu_stats = {f"cpu_{k}": v for k, v in percentiles(cpu).items()}
    return {"reads": reads, **percentiles(samples), **cpu_stats}


# -- HTTP ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(store: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    args = ["serve", "--store", str(store)]
    return start_cli_server(args, {"LIVEPROFILE_READ_TOKEN": TOKEN}, port, log)


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one request on a keep-alive connection and read the whole response; the status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def open_loop(
    port: int, users: list[str], rate: float, duration: float, connections: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    total = int(rate * (WARMUP_S + duration))
    warmup = int(rate * WARMUP_S)
    requests = [
        (
            f"GET /v1/profiles/{user} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n"
        ).encode()
        for user in rng.choices(users, k=total)
    ]
    queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    done_at: list[float] = []
    clock = time.perf_counter

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                i, due = await queue.get()
                if i < 0:
                    return
                status = await _exchange(reader, writer, requests[i])
                if i >= warmup:
                    end = clock()
                    latencies.append(end - due)
                    done_at.append(end)
                    statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    await asyncio.sleep(0.2)  # connections open before the clock starts
    start = clock()
    for i in range(total):
        due = start + i / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((i, due))
    for _ in workers:
        queue.put_nowait((-1, 0.0))
    await asyncio.gather(*workers)
    measured_from = start + warmup / rate
    achieved = len(latencies) / (max(done_at) - measured_from)
    return {
        "target_rate": rate,
        "achieved_rate": achieved,
        "requests": len(latencies),
        "connections": connections,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        **percentiles(latencies),
    }


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux), to tell server cost from waiting."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def over_http(store: Path, users: list[str], args: argparse.Namespace) -> dict[str, Any]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_server(store, port, Path(tmp) / "serve.log")
        try:
            try:
                import uvloop

                runner = uvloop.run
            except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
                runner = asyncio.run
            cpu0 = cpu_seconds(proc.pid)
            result: dict[str, Any] = runner(
                open_loop(port, users, args.rate, args.duration, args.connections, args.seed)
            )
            cpu1 = cpu_seconds(proc.pid)
            total = int(args.rate * (WARMUP_S + args.duration))
            if cpu0 is not None and cpu1 is not None:
                result["server_cpu_ms_per_request"] = (cpu1 - cpu0) * 1000 / total
            result["load_average_1m"] = os.getloadavg()[0]
            return result
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--store",
        default="liveprofile-data/bench-serving.db",
        help="SQLite store to read (replayed into first if missing; delete it to rebuild; "
        "default: %(default)s).",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=300_000,
        help="Complete Journey transactions to replay into a new store (default: %(default)s).",
    )
    parser.add_argument(
        "--movielens",
        metavar="DIR",
        help="Replay MovieLens ratings from DIR (e.g. ../shared/data/ml-latest-small) instead.",
    )
    parser.add_argument(
        "--reads", type=int, default=10_000, help="In-process reads to time (default: %(default)s)."
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=1000.0,
        help="HTTP requests per second (default: %(default)s).",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="HTTP seconds measured, after a 1 s warm-up (default: %(default)s).",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=32,
        help="Keep-alive connections of the generator (default: %(default)s).",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="Seed of the random user picks (default: %(default)s)."
    )
    parser.add_argument("--json", metavar="PATH", help="Also write the figures as JSON here.")
    args = parser.parse_args()

    store = build_store(args)
    users = users_of(store)
    local = in_process(store, users, args.reads, args.seed)
    http = over_http(store, users, args)
    rows = [
        ("in process", f"{local['reads']:,} reads", local),
        (
            "HTTP loopback",
            f"{http['achieved_rate']:,.0f}/s of {http['target_rate']:,.0f}/s",
            http,
        ),
    ]
    print(f"\nsingle-profile read, {len(users):,} users in {store}")
    print(f"{'path':<14} {'load':<22} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8}")
    for name, load, r in rows:
        print(
            f"{name:<14} {load:<22} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
            f"{r['p999_ms']:>9.3f} {r['max_ms']:>8.3f}"
        )
    print(
        f"in process, thread CPU time per read: p50 {local['cpu_p50_ms']:.3f} ms, "
        f"p99 {local['cpu_p99_ms']:.3f} ms"
    )
    print(f"HTTP statuses: {http['statuses']}")
    cpu = http.get("server_cpu_ms_per_request")
    if cpu is not None:
        print(f"server CPU per request: {cpu:.3f} ms")
    load = http["load_average_1m"]
    print(f"load average (1 min) after the HTTP run: {load:.2f} on {os.cpu_count()} CPUs")
    if args.json:
        result = {
            "store": str(store),
            "users": len(users),
            "in_process": local,
            "http": http,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
