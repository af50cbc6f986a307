"""What the pipeline's ranker rounds cost a replay: the synthetic shop (1,000 users, 300 items,
28 days, seed 1; batches of 5,000) replayed with ``[ranker] every = "7d"``, ``users = 50``
against rounds off, interleaved, two runs each; prints one line per run (events, seconds,
events/s and the rounds' summary); the stores are left in a temporary folder. No options.

Run: ``python benchmarks/ranker_rounds.py``
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile

import liveprofile
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.parse_args()  # no options: --help only
    folder = pathlib.Path(tempfile.mkdtemp())
    write_jsonl(folder / "e.jsonl", SyntheticConfig(users=1000, items=300, days=28, seed=1))
    for run in (1, 2):
        for label, every in (("off", "0s"), ("every 7d, 50 users", "7d")):
            config = liveprofile.PipelineConfig.from_toml(
                f'[ranker]\nevery = "{every}"\nusers = 50\n[run]\nbatch_size = 5000\n'
            )
            out = liveprofile.replay(
                folder / "e.jsonl",
                store=folder / f"{run}-{every}.db",
                config=config,
                progress=False,
            )
            print(
                run,
                label,
                out["events"],
                "events",
                out["seconds"],
                "s",
                out["events_per_s"],
                "ev/s",
                out.get("ranker"),
                flush=True,
            )


if __name__ == "__main__":
    main()
