"""Run reports: the JSON summary of a replay and a plot of prequential metrics over time."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def write_report(summary: dict[str, Any], path: str | Path) -> None:
    """Write the run summary as indented JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(summary, indent=2, default=str) + "\n")


def plot_metrics(summary: dict[str, Any], path: str | Path) -> None:
    """Prequential AUC and log loss per event-time window, one row per task, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = {name: t for name, t in summary["tasks"].items() if t["n"]}
    rows = max(1, len(tasks))
    fig, axes = plt.subplots(rows, 2, figsize=(11, 3.2 * rows), squeeze=False)
    for row, (name, task) in enumerate(tasks.items()):
        if "mae" in task:  # a regression task: its errors per window
            _plot_errors(axes[row], name, task)
            continue
        points = _smooth([w for w in task["windows"] if w["n"]])
        when = [datetime.fromtimestamp(start, UTC) for start, _, _ in points]
        auc_ax, loss_ax = axes[row]
        auc_ax.plot(when, [auc for _, auc, _ in points], marker=".", color="tab:blue")
        auc_ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        auc_ax.set_title(f"{name}: prequential AUC (overall {_fmt(task['auc'])})")
        auc_ax.set_ylim(0.4, 1.0)
        loss_ax.plot(when, [loss for _, _, loss in points], marker=".", color="tab:red")
        loss_ax.set_title(f"{name}: log loss (overall {_fmt(task['logloss'])})")
        for ax in (auc_ax, loss_ax):
            ax.grid(alpha=0.3)
            ax.tick_params(axis="x", labelrotation=30)
    if not tasks:
        axes[0][0].text(0.5, 0.5, "no task produced examples", ha="center")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_errors(axes: Any, name: str, task: dict[str, Any]) -> None:
    """A regression task's MAE and RMSE per event-time window."""
    windows = [w for w in task["windows"] if w["n"]]
    when = [datetime.fromtimestamp(w["start"], UTC) for w in windows]
    for ax, key, color in zip(axes, ("mae", "rmse"), ("tab:blue", "tab:red"), strict=True):
        ax.plot(when, [w[key] for w in windows], marker=".", color=color)
        ax.set_title(f"{name}: {key.upper()} (overall {_fmt(task[key])})")
        ax.grid(alpha=0.3)
        ax.tick_params(axis="x", labelrotation=30)


def _smooth(windows: list[dict[str, Any]], points: int = 60) -> list[tuple[float, float, float]]:
    """Merge consecutive windows into at most ``points`` groups of similar example counts;
    each group shows the example-weighted mean AUC and log loss of its windows."""
    total = sum(w["n"] for w in windows)
    out: list[tuple[float, float, float]] = []
    group: list[dict[str, Any]] = []
    for w in windows:
        group.append(w)
        if sum(g["n"] for g in group) >= total / points or w is windows[-1]:
            n = sum(g["n"] for g in group)
            scored = [g for g in group if g["auc"] is not None]
            n_scored = sum(g["n"] for g in scored)
            auc = sum(g["auc"] * g["n"] for g in scored) / n_scored if n_scored else float("nan")
            out.append((group[0]["start"], auc, sum(g["logloss"] * g["n"] for g in group) / n))
            group = []
    return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
