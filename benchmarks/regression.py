"""A regression task (``target = "value"``) on the compiled step against the Python step, side by
side in one run: the README's CRM pipeline on the Complete Journey (churn risk ``repeat_30d``
and expected 30-day spend ``spend_30d`` per household, ``--spend-only`` for the latter alone).

Both steps replay the same batches through a fresh core, interleaved ``--repeat`` times (best
events/s kept; only ``Core.step`` is timed). The script checks that both give the same metrics,
to the byte (MAE, RMSE and the drift state of ``spend_30d``, AUC and log loss of
``repeat_30d``) and the same models, and prints events/s and the metrics of each.

    .venv/bin/python benchmarks/regression.py                 # all 1.47M transactions
    .venv/bin/python benchmarks/regression.py --cj-limit 300000 --repeat 1

Nothing is written.
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec
from timed import timed_replay

from liveprofile.config import PipelineConfig, RunConfig
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


def crm_config(engine: str, spend_only: bool) -> PipelineConfig:
    config = PipelineConfig.from_toml(CRM_TOML)
    tasks = [t for t in config.tasks if t.regression] if spend_only else config.tasks
    run = msgspec.structs.replace(config.run, engine=engine)
    assert isinstance(run, RunConfig)
    return msgspec.structs.replace(config, tasks=tasks, run=run)


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
    size = crm_config("compiled", args.spend_only).run.batch_size
    batches = [b.events for b in source.batches(0, size)]
    n = sum(len(b) for b in batches)
    best: dict[str, float] = {}
    finals: dict[str, Any] = {}
    for _ in range(args.repeat):
        for engine in ("python", "compiled"):
            config = crm_config(engine, args.spend_only)
            core, state, rate = timed_replay(config, batches)
            assert (core.compiled is not None) == (engine == "compiled")
            if core.compiled is not None:
                core.compiled.release()  # the open examples back to the tasks, to compare
            best[engine] = max(best.get(engine, 0.0), rate)
            finals[engine] = {
                name: (
                    task.metrics.to_bytes(),
                    task.metrics.summary(),
                    sorted((p.id, p.total, p.converted) for p in task.pending.values()),
                )
                for name, task in state.tasks.items()
            }
            print(f"{engine:>8}: {rate:>10,.0f} events/s", flush=True)
    same = finals["python"] == finals["compiled"]
    print(f"\n{n:,} transactions, batches of {size:,}, best of {args.repeat} interleaved runs")
    print(f"{'step':>8} {'events/s':>10}  metrics")
    for engine in ("python", "compiled"):
        parts = []
        for name, (_, s, _) in finals[engine].items():
            shown = ("mae", "rmse") if "mae" in s else ("auc", "logloss")
            figures = " ".join(f"{k} {_figure(s[k])}" for k in shown)
            parts.append(f"{name}: n {s['n']:,} {figures}")
        print(f"{engine:>8} {best[engine]:>10,.0f}  " + "; ".join(parts))
    print(f"speed-up {best['compiled'] / best['python']:.2f}x; metrics and open examples "
          f"{'the same, to the byte' if same else 'DIFFER'}")  # fmt: skip
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
