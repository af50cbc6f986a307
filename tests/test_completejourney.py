"""The Complete Journey source: transactions as purchase events, in time order, as columns."""

from __future__ import annotations

import pandas as pd
import pytest

from liveprofile.datasets.completejourney import CompleteJourneySource, data_dir
from liveprofile.events.columns import EventColumns

LIMIT = 30_000


@pytest.fixture(scope="module")
def source() -> CompleteJourneySource:
    return CompleteJourneySource(limit=LIMIT)


def test_batches_are_columns_and_boundaries_change_nothing(source: CompleteJourneySource) -> None:
    whole = [b.events for b in source.batches(0, LIMIT)]
    assert len(whole) == 1 and isinstance(whole[0], EventColumns)
    events = list(whole[0])
    assert len(events) == LIMIT
    pieces = [e for b in source.batches(0, 7_001) for e in b.events]
    resumed = [e for b in source.batches(12_345, 5_000) for e in b.events]
    assert pieces == events and resumed == events[12_345:]
    assert [b.offset for b in source.batches(20_000, 4_000)] == [24_000, 28_000, 30_000]


def test_events_carry_the_transactions_and_their_products(source: CompleteJourneySource) -> None:
    events = list(next(source.batches(0, LIMIT)).events)
    tx = pd.read_parquet(data_dir() / "transactions.parquet")
    tx = tx.sort_values("transaction_timestamp", kind="stable").head(LIMIT)
    products = pd.read_parquet(data_dir() / "products.parquet").set_index("product_id")
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    for k in (0, 1, 777, LIMIT - 1):
        row = tx.iloc[k]
        e = events[k]
        assert e.event_id == f"{row.basket_id}-{row.product_id}"
        assert (e.user, e.item_id, e.type) == (
            str(row.household_id),
            str(row.product_id),
            "purchase",
        )
        assert e.value == pytest.approx(row.sales_value)
        assert e.ts == row.transaction_timestamp.timestamp()
        product = products.loc[row.product_id]
        assert e.category == product.product_category
        assert e.tags == (product.department,)
    assert all(isinstance(e.user, str) and isinstance(e.tags, tuple) for e in events)
