"""Load test of the HTTP collector: batches of synthetic events over N concurrent connections.

Starts ``liveprofile collect`` (Redis mode, a unique key prefix, removed afterwards) as a
subprocess on a free port, sends pre-encoded batches of synthetic events
(:func:`liveprofile.datasets.synthetic.generate`) with ``httpx.AsyncClient`` until a fixed number
of requests is done or a fixed duration (at most 30 s) has passed, and prints events/s,
requests/s and the p50/p95/p99 request latency.

    python benchmarks/collector_load.py --connections 16 --duration 10 --batch 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from itertools import cycle, islice
from pathlib import Path

import httpx
import redis
from http_server import start_cli_server

from liveprofile.datasets.synthetic import SyntheticConfig, generate

MAX_DURATION = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bodies(batch: int, count: int) -> list[bytes]:
    events = list(islice(generate(SyntheticConfig(users=500, days=28, seed=7)), batch * count))
    return [json.dumps(events[i : i + batch]).encode() for i in range(0, len(events), batch)]


def _start(url: str, prefix: str, port: int, token: str, log: Path) -> subprocess.Popen[bytes]:
    args = ["collect", "--redis", url, "--prefix", prefix, "--partitions", "2"]
    return start_cli_server(args, {"LIVEPROFILE_TOKEN": token}, port, log)


async def _load(
    base: str, token: str, bodies: list[bytes], connections: int, requests: int, duration: float
) -> tuple[list[float], int, int, float]:
    latencies: list[float] = []
    accepted = 0
    failed = 0
    source = cycle(bodies)
    sent = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base, limits=limits, headers=headers, timeout=30) as c:
        started = time.perf_counter()
        stop_at = started + duration

        async def one_connection() -> None:
            nonlocal sent, accepted, failed
            while sent < requests and time.perf_counter() < stop_at:
                sent += 1
                body = next(source)
                t0 = time.perf_counter()
                r = await c.post("/v1/events", content=body)
                latencies.append(time.perf_counter() - t0)
                if r.status_code == 200:
                    accepted += r.json()["accepted"]
                else:
                    failed += 1

        await asyncio.gather(*(one_connection() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return latencies, accepted, failed, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--requests", type=int, default=10**9, help="stop after this many requests")
    parser.add_argument(
        "--duration", type=float, default=10.0, help=f"seconds (max {MAX_DURATION:g})"
    )
    args = parser.parse_args()
    duration = min(args.duration, MAX_DURATION)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    token = uuid.uuid4().hex
    port = _free_port()
    bodies = _bodies(args.batch, 400)
    client = redis.Redis.from_url(args.redis)
    with tempfile.TemporaryDirectory() as tmp:
        proc = _start(args.redis, prefix, port, token, Path(tmp) / "collector.log")
        try:
            lat, accepted, failed, elapsed = asyncio.run(
                _load(
                    f"http://127.0.0.1:{port}",
                    token,
                    bodies,
                    args.connections,
                    args.requests,
                    duration,
                )
            )
            stored = sum(client.xlen(f"{prefix}:events:{p}") for p in (0, 1))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            keys = list(client.scan_iter(f"{prefix}:*"))
            if keys:
                client.delete(*keys)
            client.close()
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [0.0] * 99
    print(
        f"collector load: {args.connections} connections, {args.batch} events/request, "
        f"{elapsed:.1f} s"
    )
    print(f"requests        {len(lat):,} ({failed} failed)")
    print(f"events accepted {accepted:,} (in Redis streams: {stored:,})")
    print(f"events/s        {accepted / elapsed:,.0f}")
    print(f"requests/s      {len(lat) / elapsed:,.0f}")
    print(f"latency ms      p50 {q[49] * 1e3:.2f}  p95 {q[94] * 1e3:.2f}  p99 {q[98] * 1e3:.2f}")


if __name__ == "__main__":
    main()
