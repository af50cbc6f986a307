"""The printed report of :mod:`compare`: one table per dataset, with footnotes.

Imported by ``compare.py``; not a script, it takes no arguments.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table


def _ratio(x: float) -> str:
    return _num(x, ".2f" if x >= 0.995 else ".2g")


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def print_table(out: Console, name: str, report: dict[str, Any]) -> None:
    """One dataset's table and its footnotes."""
    table = Table(title=f"{name}: {report['events']:,} events", title_justify="left")
    for col, just in [
        ("system", "left"),
        ("per second", "right"),
        ("x liveprofile", "right"),
        ("AUC", "right"),
        ("log loss", "right"),
        ("n", "right"),
    ]:
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for section in report["sections"]:
        table.add_row(f"[bold]{section['title']}[/bold]", f"[dim]{section['unit']}/s[/dim]")
        for row in section["rows"]:
            table.add_row(
                "  " + row["system"],
                _num(row["per_s"], ",.0f"),
                _ratio(row["vs_liveprofile"]),
                _num(row["auc"], ".4f"),
                _num(row["logloss"], ".4f"),
                f"{row['n']:,}",
            )
        table.add_section()
    out.print(table)
    for line in footnotes(report):
        out.print(line, soft_wrap=False, highlight=False)
    out.print()


def footnotes(report: dict[str, Any]) -> list[str]:
    ops, mem, checks = report["ops"], report["memory"], report["checks"]
    delayed = report["delayed"]
    lp_input = (
        "event columns from the loaded table (parquet load excluded)"
        if delayed
        else "CSV parse and validation"
    )
    batch = report.get("batch_size", 20_000)
    river_labels = (
        "learns each label when its 14-day window closes, as liveprofile does; it "
        f"sees only the {report['examples']:,} exposures (liveprofile updates "
        "profiles on every event), its rate is per stream event like liveprofile's"
        if delayed
        else "learns each label right after predicting"
    )
    notes = [
        "per second: events, model operations or examples, as the section says; x liveprofile: "
        "relative to the first (liveprofile) row of the same section.",
        f"liveprofile end to end: LocalRunner into SQLite (WAL) - {lp_input}, de-duplication, "
        "profile and item statistics, hashed features, predict, learn, and one commit (profiles, "
        f"items, pending examples, model, metrics, offset) per {batch:,}-event batch; run "
        "after a 5,000-event warm-up (compiled code loaded) and before the benchmark loads the "
        "event list the other systems read.",
        "River TargetAgg pipeline: (TargetAgg mean + Agg count by user, item"
        + (", category, user+category" if delayed else "")
        + (", sales value" if delayed else "")
        + " | StandardScaler) + one-hot user, topics, hour, weekday | LogisticRegression; "
        f"{river_labels}. One-hots bypass the scaler (it zeroes them); items are not one-hot "
        "(no AUC gain, 4-6x slower: River's linear models cost O(number of weights) per step).",
        f"Learner alone: the exact operations liveprofile's core hands its learner "
        f"({ops['predict']:,} predict, {ops['learn']:,} learn, {ops['predict_learn']:,} "
        f"predict+learn; {ops['features_per_op']:.1f} hashed features each). liveprofile learners "
        "run them in one compiled run_ops call (JIT warmed up); Vowpal Wabbit parses text lines "
        "(-b 20, logistic loss and link); River gets {index: value} dicts.",
        "First N examples: the first labelled examples of the same operations, each predicted then "
        "learned at once"
        + (
            " (on this delayed task that favours these rows over the whole-stream protocol)"
            if delayed
            else ""
        )
        + "; River's cost per example grows with the model and partial_fit costs about a "
        "millisecond a call, so they get a prefix. "
        "scikit-learn: SGDClassifier(loss='log_loss').partial_fit per example on a sparse row.",
        f"Memory per profile ({mem['profiles']:,} profiles): SQLite file incl. WAL / profiles "
        f"{mem['sqlite_bytes_per_profile']:,.0f} B (the whole store: items, pending examples, "
        f"de-dup log, model); profile blob {mem['blob_bytes_per_profile']:,.0f} B; in the "
        f"process between batches (committed bytes in a dict) "
        f"{mem['resting_bytes_per_profile']:,.0f} B, decoded while a batch uses it "
        f"{mem['python_bytes_per_profile']:,.0f} B (tracemalloc).",
        "Checks: the runner's own metrics (AUC over 2,048 score bins) "
        f"auc={_num(checks['runner_auc_binned'], '.4f')} "
        f"logloss={_num(checks['runner_logloss'], '.4f')} n={checks['runner_n']:,}; "
        "FTRL alone vs end to end: max |p diff| = "
        f"{checks['max_abs_diff_ftrl_alone_vs_end_to_end']:.1e}"
        + ("; derived labels match liveprofile's operations exactly." if delayed else "."),
    ]
    return [f"[dim]{i + 1}. {n}[/dim]" for i, n in enumerate(notes)]
