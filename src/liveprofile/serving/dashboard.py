"""The dashboard: a static page (``GET /dashboard``) and the JSON it polls.

The page itself needs no token, since it holds no data; it asks for the read token (or takes it from
the URL fragment, ``/dashboard#token=...``, which browsers never send to the server) and sends
it with every data call. ``GET /v1/stats`` gives the counters, the live throughput and the
per-task prequential summaries; ``GET /v1/metrics/timeline`` gives per-window AUC and log loss
per task and the segment sizes over time. Profiles come from ``GET /v1/profiles/{user}``.

>>> from fastapi import FastAPI
>>> from liveprofile.store import open_store
>>> store = open_store("memory://")
>>> app = FastAPI()
>>> mount_dashboard(app, StoreStats(lambda: store), [])
>>> sorted(r.path for r in app.routes if r.path.startswith(("/v1", "/dashboard")))
['/dashboard', '/dashboard/static', '/v1/metrics/timeline', '/v1/stats']
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.params import Depends
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from liveprofile.serving.limits import JSONResponse
from liveprofile.serving.metrics import StoreStats

STATIC = Path(str(files("liveprofile.serving") / "static"))


def mount_dashboard(app: FastAPI, stats: StoreStats, dependencies: Sequence[Depends]) -> None:
    """Add the dashboard page, its static files and its JSON endpoints (behind
    ``dependencies``, i.e. the read token) to ``app``."""
    auth = list(dependencies)

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> Response:
        """The dashboard page (no data in it: the data calls need the read token)."""
        return FileResponse(STATIC / "dashboard.html", headers={"Cache-Control": "no-cache"})

    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")

    @app.get("/v1/stats", dependencies=auth)
    async def store_stats() -> Response:
        """Counters, the live throughput (events committed per wall-clock second, from
        successive samples) and each task's prequential summary; for a store kept per
        partition (Kafka workers, the Flink job), all of them over every partition, which
        ``partitions`` lists."""
        snap, rate = stats.sample()
        return JSONResponse(
            {
                "seq": snap.seq,
                "events": snap.events,
                "duplicates": snap.duplicates,
                "dead_letters": snap.dead_letters,
                "watermark": snap.watermark,
                "profiles": snap.profiles,
                "throughput": {
                    **rate,
                    "history": [list(s) for s in stats.throughput.history],
                },
                "tasks": {name: t.summary for name, t in snap.tasks.items()},
                "segments": snap.segment_sizes if snap.segments is not None else None,
                "partitions": list(snap.partitions),
            }
        )

    @app.get("/v1/metrics/timeline", dependencies=auth)
    async def timeline() -> Response:
        """Per task, the prequential metrics of every event-time window (oldest first); the
        segment sizes after each commit (``null`` when no segments are declared)."""
        snap = stats.snapshot()
        return JSONResponse(
            {
                "seq": snap.seq,
                "window_s": snap.window_s,
                "tasks": {name: t.windows for name, t in snap.tasks.items()},
                "segments": None
                if snap.segments is None
                else [[ts, sizes] for ts, sizes in snap.segments],
                "segments_error": snap.segments_error,
            }
        )
