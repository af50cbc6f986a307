"""A readable rendering of a profile view for the terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table

from liveprofile.durations import format_time


def _when(ts: float | None) -> str:
    return "-" if ts is None else format_time(ts)


def render_profile(view: dict[str, Any]) -> Group:
    """Tables for the summary, interests, counters, scores and traits of one profile."""
    summary = Table(title=f"profile of {view['user']}", show_header=False)
    summary.add_row("as of", _when(view["as_of"]))
    summary.add_row("first seen", _when(view["first_seen"]))
    summary.add_row("last seen", _when(view["last_seen"]))
    summary.add_row("recency (days)", f"{view['recency_days']:.1f}")
    summary.add_row("lifecycle", view["lifecycle"])
    summary.add_row("frequency (purchases)", str(view["frequency"]))
    summary.add_row("monetary", f"{view['monetary']:.2f}")
    if view["rfm"] is not None:
        rfm = view["rfm"]
        summary.add_row(
            "RFM scores (1-5)", f"R {rfm['recency']}  F {rfm['frequency']}  M {rfm['monetary']}"
        )
    summary.add_row("events", str(view["events"]))
    if view["mean_value"] is not None:
        summary.add_row("mean value (e.g. rating)", f"{view['mean_value']:.2f}")
    spend = [f"{d}: {view[f'monetary_{d}d']:.2f}" for d in (7, 30, 90) if f"monetary_{d}d" in view]
    if spend:
        summary.add_row("spend (last days)", "  ".join(spend))
    if view.get("segments"):
        summary.add_row("segments", ", ".join(view["segments"]))
    if view.get("aliases"):
        summary.add_row("merged anonymous ids", ", ".join(view["aliases"]))
    risk = view.get("risk")
    if risk:
        anomaly = "-" if risk["anomaly"] is None else f"{risk['anomaly']:.3f}"
        velocity = "  ".join(f"{k} {v}" for k, v in risk.items() if k != "anomaly")
        summary.add_row("velocity", velocity)
        summary.add_row("anomaly score", anomaly)
    interests = Table(title="interests (decayed)")
    interests.add_column("tag")
    interests.add_column("weight", justify="right")
    for tag, weight in view["interests"].items():
        interests.add_row(tag, f"{weight:.4g}")
    counters = Table(title="events by type")
    for column in ("type", "lifetime", "decayed"):
        counters.add_column(column)
    for kind, count in view["counts"].items():
        counters.add_row(kind, str(count), f"{view['decayed_counts'].get(kind, 0.0):.4g}")
    parts: list[Table] = [summary, interests, counters]
    if view["scores"] or view["traits"]:
        extra = Table(title="scores and traits")
        extra.add_column("name")
        extra.add_column("value")
        for name, score in view["scores"].items():
            extra.add_row(f"score.{name}", f"{score:.4f}")
        for name, trait in view["traits"].items():
            extra.add_row(f"trait.{name}", str(trait))
        parts.append(extra)
    if view.get("recent"):
        recent = Table(title="recent events (newest first)")
        for column in ("event time (UTC)", "type", "item", "value"):
            recent.add_column(column)
        for r in view["recent"]:
            value = "" if r["value"] is None else f"{r['value']:.2f}"
            recent.add_row(_when(r["ts"]), r["type"], r["item_id"] or "", value)
        parts.append(recent)
    return Group(*parts)
