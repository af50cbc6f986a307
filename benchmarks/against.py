"""``compare.py --against REF``: this checkout and commit REF side by side, in one run.

REF's tree is taken with ``git archive REF | tar -x`` into a temporary directory (no second
worktree, nothing installed). Each round runs REF's own ``benchmarks/compare.py`` and this
checkout's, one after the other and alternating which goes first, each in its own process with
``PYTHONPATH`` pointing at its ``src`` (ahead of the installed package), with the same options.
Then it prints, per dataset and system, the median events (or operations) per second of each
side over the rounds, their ratio (this checkout / REF) and both AUCs, and the range over the
rounds when there is more than one. Configuration changes (``--no-behaviour``,
``--config-override``) go to this checkout's side only (:func:`here_only`)::

    python benchmarks/compare.py --against dafe863 --rounds 2 --cj-limit 300000

Runs are interleaved so that both sides share whatever else the machine is doing; on a shared
machine, read the ratios, and the spread between rounds, rather than the absolute figures.

Imported by ``compare.py``, which passes it its options; not a script of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
#: options passed on to both sides (REF's compare.py may not know newer ones)
SHARED = ("dataset", "limit", "cj_limit", "river_examples", "sklearn_events", "data_dir")


def here_only(args: argparse.Namespace) -> list[str]:
    """The options only this checkout's side gets: configuration changes (``--no-behaviour``,
    ``--config-override``), which REF's compare.py may not know and REF's code may not have."""
    out = ["--no-behaviour"] if args.no_behaviour else []
    for item in args.config_override:
        out += ["--config-override", item]
    return out


def checkout(ref: str, into: Path) -> str:
    """Extract commit ``ref``'s tree into ``into``; return its short hash."""
    short = subprocess.run(
        ["git", "rev-parse", "--short", f"{ref}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", short], cwd=ROOT, capture_output=True, check=True
    ).stdout
    tar_path = into.with_suffix(".tar")
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    tar_path.unlink()
    return short


def passed_on(args: argparse.Namespace) -> list[str]:
    """The command-line options both sides get."""
    out: list[str] = []
    for name in SHARED:
        value = getattr(args, name)
        if value is not None:
            out += [f"--{name.replace('_', '-')}", str(value)]
    return out


def run_side(tree: Path, options: list[str], result: Path, log: Console) -> dict[str, Any]:
    """One run of ``tree``'s compare.py on ``tree``'s code; its JSON results."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    cmd = [sys.executable, str(tree / "benchmarks" / "compare.py"), *options, "--json", str(result)]
    log.log(f"running {' '.join(cmd[1:])}")
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    data: dict[str, Any] = json.loads(result.read_text())
    return data


def rates(results: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """(dataset, section, system) -> the row of every round."""
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for res in results:
        for name, report in res["datasets"].items():
            for k, section in enumerate(report["sections"]):
                for row in section["rows"]:
                    # two sections may share a title ("first N examples"): number them
                    key = (name, f"{k}\t{section['title']}", row["system"])
                    out.setdefault(key, []).append(row)
    return out


def print_side_by_side(
    out: Console, here: str, ref: str, mine: list[dict[str, Any]], theirs: list[dict[str, Any]]
) -> None:
    """One table per dataset: per-second figures of both sides, their ratio and AUCs."""
    a, b = rates(mine), rates(theirs)
    for dataset in dict.fromkeys(k[0] for k in a):
        table = Table(title=f"{dataset}: {here} against {ref}", title_justify="left")
        for col in ("section / system", f"{here} /s", f"{ref} /s", "ratio", "AUC", "AUC ref"):
            table.add_column(col, justify="left" if col.startswith("section") else "right")
        section = None
        for key, rows in a.items():
            if key[0] != dataset or key not in b:
                continue
            if key[1] != section:
                section = key[1]
                table.add_section()
                table.add_row(f"[bold]{section.split(chr(9), 1)[1]}[/bold]")
            mine_s, theirs_s = [r["per_s"] for r in rows], [r["per_s"] for r in b[key]]
            m, t = statistics.median(mine_s), statistics.median(theirs_s)
            table.add_row(
                "  " + key[2],
                _spread(m, mine_s),
                _spread(t, theirs_s),
                f"{m / t:.3f}" if t else "-",
                _auc(rows[-1]["auc"]),
                _auc(b[key][-1]["auc"]),
            )
        out.print(table)


def _spread(median: float, values: list[float]) -> str:
    if len(values) == 1:
        return f"{median:,.0f}"
    return f"{median:,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def _auc(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.4f}"


def main(args: argparse.Namespace, out: Console, log: Console) -> int:
    """Run this checkout and ``args.against`` alternately ``args.rounds`` times; print both."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "ref"
        tree.mkdir()
        ref = checkout(args.against, tree)
        here = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        options = passed_on(args)
        mine: list[dict[str, Any]] = []
        theirs: list[dict[str, Any]] = []
        for k in range(args.rounds):
            sides = [(ROOT, mine), (tree, theirs)]
            for path, into in sides if k % 2 == 0 else sides[::-1]:
                name = "ref" if path == tree else "here"
                extra = [] if path == tree else here_only(args)
                into.append(run_side(path, options + extra, Path(tmp) / f"{name}-{k}.json", log))
        print_side_by_side(out, here, ref, mine, theirs)
        if here_only(args):
            out.print(f"[dim]{here} ran with {' '.join(here_only(args))}; {ref} without[/dim]")
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            report = {
                "here": here,
                "ref": ref,
                "options": options,
                "here_only": here_only(args),
                "mine": mine,
                "theirs": theirs,
            }
            args.json.write_text(json.dumps(report, indent=2))
    return 0
