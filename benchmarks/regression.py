"""A regression task (``target = "value"``) on the step: the README's CRM pipeline on the Complete
Journey (churn risk ``repeat_30d`` and expected 30-day spend ``spend_30d`` per household,
``--spend-only`` for the latter alone).

The same batches replay through a fresh core ``--repeat`` times (best events/s kept; only
``Core.step`` is timed). The script checks that every run gives the same metrics, to the byte
(MAE, RMSE and the drift state of ``spend_30d``, AUC and log loss of ``repeat_30d``) and the
same open examples, and prints events/s and the metrics.

    .venv/bin/python benchmarks/regression.py                 # all 1.47M transactions
    .venv/bin/python benchmarks/regression.py --cj-limit 300000 --repeat 1

Nothing is written.
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec
from timed import timed_replay

from liveprofile.config import PipelineConfig
from liveprofile.datasets.completejourney import CompleteJourneySource

#: the README's CRM example (section "CRM: churn risk and expected spend")
CRM_TOML = """\
[run]
batch_size = 100000

[risk]
velocity = false

[[tasks]]
name = "repeat_30d"
on = ["purchase"]
label = { kind = "delayed", conversion = ["purchase"], key = "user", window = "30d" }

[[tasks]]
name = "spend_30d"
on = ["purchase"]
learner = { kind = "linreg" }
[tasks.label]
kind = "delayed"
conversion = ["purchase"]
key = "user"
window = "30d"
target = "value"

[segments]
slipping_valuable = "score.repeat_30d < 0.9 and score.spend_30d > 150"
"""


def crm_config(spend_only: bool) -> PipelineConfig:
    config = PipelineConfig.from_toml(CRM_TOML)
    tasks = [t for t in config.tasks if t.regression] if spend_only else config.tasks
    return msgspec.structs.replace(config, tasks=tasks)


def _figure(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cj-limit", type=int, default=0,
        help="Complete Journey transactions replayed; 0: every one (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=2,
        help="interleaved runs of each step, best events/s kept (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--spend-only", action="store_true", help="the regression task alone, without repeat_30d"
    )
    args = parser.parse_args()
    source = CompleteJourneySource(limit=args.cj_limit or None)
    config = crm_config(args.spend_only)
    size = config.run.batch_size
    batches = [b.events for b in source.batches(0, size)]
    n = sum(len(b) for b in batches)
    best = 0.0
    runs: list[Any] = []
    for _ in range(args.repeat):
        core, state, rate = timed_replay(config, batches)
        core.compiled.release()  # the open examples back to the tasks, to compare
        best = max(best, rate)
        runs.append(
            {
                name: (
                    task.metrics.to_bytes(),
                    task.metrics.summary(),
                    sorted((p.id, p.total, p.converted) for p in task.pending.values()),
                )
                for name, task in state.tasks.items()
            }
        )
        print(f"step: {rate:>10,.0f} events/s", flush=True)
    same = all(run == runs[0] for run in runs)
    print(f"\n{n:,} transactions, batches of {size:,}, best of {args.repeat} runs")
    parts = []
    for name, (_, s, _) in runs[0].items():
        shown = ("mae", "rmse") if "mae" in s else ("auc", "logloss")
        figures = " ".join(f"{k} {_figure(s[k])}" for k in shown)
        parts.append(f"{name}: n {s['n']:,} {figures}")
    print(f"{best:>10,.0f} events/s  " + "; ".join(parts))
    print(f"metrics and open examples {'the same on every run' if same else 'DIFFER'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
