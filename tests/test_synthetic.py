"""The synthetic e-commerce generator: determinism, funnel shape, planted drift, file output."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from liveprofile.datasets.logins import returning_logins, returning_share, with_logins
from liveprofile.datasets.synthetic import (
    DEFAULT_CONFIG,
    GroundTruth,
    SyntheticConfig,
    generate,
    ground_truth,
    write_jsonl,
)
from liveprofile.errors import ConfigError

Event = dict[str, object]
Floats = npt.NDArray[np.float64]
SMALL = SyntheticConfig(users=40, items=60, days=7, seed=5)


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return list(generate(DEFAULT_CONFIG))


@pytest.fixture(scope="module")
def truth() -> GroundTruth:
    return ground_truth(DEFAULT_CONFIG)


def session_of(event: Event) -> str:
    return str(event["event_id"]).split("-")[0]


def ts_of(event: Event) -> float:
    ts = event["ts"]
    assert isinstance(ts, float)
    return ts


def test_same_seed_same_events() -> None:
    assert list(generate(SMALL)) == list(generate(SMALL))
    first, second = ground_truth(SMALL), ground_truth(SMALL)
    assert np.array_equal(first.preferences_after, second.preferences_after)
    assert first.drifted_users == second.drifted_users


def test_different_seeds_differ() -> None:
    other = SyntheticConfig(users=40, items=60, days=7, seed=6)
    a, b = list(generate(SMALL)), list(generate(other))
    assert [e["ts"] for e in a] != [e["ts"] for e in b]
    assert ground_truth(SMALL).drifted_users != ground_truth(other).drifted_users


def test_default_size_and_mix(events: list[Event]) -> None:
    counts = Counter(e["type"] for e in events)
    assert 30_000 <= len(events) <= 60_000
    assert set(counts) == {"view", "cart", "purchase"}
    assert counts["view"] > counts["cart"] > counts["purchase"] > 0


def test_sorted_by_ts_within_span(events: list[Event]) -> None:
    ts = np.array([e["ts"] for e in events], dtype=float)
    assert np.all(np.diff(ts) >= 0)
    assert ts[0] >= DEFAULT_CONFIG.start_ts
    assert ts[-1] < DEFAULT_CONFIG.end_ts


def test_event_ids_unique(events: list[Event]) -> None:
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids)


def test_fields_agree_with_ground_truth(events: list[Event], truth: GroundTruth) -> None:
    item_index = {item: i for i, item in enumerate(truth.item_ids)}
    for e in events:
        item = item_index[str(e["item_id"])]
        assert e["user_id"] in truth.user_ids
        assert e["category"] == truth.categories[int(truth.item_category[item])]
        assert isinstance(e["ts"], float)
        if e["type"] == "view":
            assert "value" not in e
        else:
            assert e["value"] == float(truth.item_price[item])
        assert e.get("tags", []) == list(truth.item_tags[item])
        assert set(e) <= {
            "event_id",
            "user_id",
            "type",
            "ts",
            "item_id",
            "category",
            "value",
            "tags",
        }


def test_funnel_order_within_sessions(events: list[Event]) -> None:
    sessions: defaultdict[str, list[Event]] = defaultdict(list)
    for e in events:
        sessions[session_of(e)].append(e)
    checked = 0
    for session in sessions.values():
        assert len({e["user_id"] for e in session}) == 1
        viewed: Counter[object] = Counter()
        carted: Counter[object] = Counter()
        for previous, e in zip([None, *session], session, strict=False):
            item = e["item_id"]
            if e["type"] == "view":
                viewed[item] += 1
            elif e["type"] == "cart":
                assert viewed[item] > 0, f"cart without a view: {e}"
                assert previous is not None and previous["type"] == "view"
                assert previous["item_id"] == item  # the cart right after its view
                viewed[item] -= 1
                carted[item] += 1
            else:
                assert carted[item] > 0, f"purchase without a cart: {e}"
                carted[item] -= 1
                checked += 1
        types = [e["type"] for e in session]
        if "purchase" in types:  # checkout comes after the last view
            assert max(i for i, t in enumerate(types) if t != "purchase") < types.index("purchase")
    assert checked > 1000


def test_ground_truth_drift_shape(truth: GroundTruth) -> None:
    config = DEFAULT_CONFIG
    assert truth.drift_ts == config.start_ts + config.drift_at * config.days * 86_400
    assert len(truth.drifted_users) == round(config.drift_fraction * config.users)
    drifted = np.array([u in truth.drifted_users for u in truth.user_ids])
    same = np.all(truth.preferences_before == truth.preferences_after, axis=1)
    assert np.array_equal(same, ~drifted)
    assert np.allclose(truth.preferences_before.sum(axis=1), 1.0)
    assert np.allclose(truth.preferences_after.sum(axis=1), 1.0)
    user = min(truth.drifted_users)
    assert truth.preferences(user, truth.drift_ts - 1) != truth.preferences(user, truth.drift_ts)


def _view_mix(events: list[Event], truth: GroundTruth, after: bool) -> dict[str, Floats]:
    index = {c: i for i, c in enumerate(truth.categories)}
    counts: defaultdict[str, Floats] = defaultdict(lambda: np.zeros(len(index)))
    for e in events:
        if e["type"] == "view" and (ts_of(e) >= truth.drift_ts) == after:
            counts[str(e["user_id"])][index[str(e["category"])]] += 1
    return {u: c / c.sum() for u, c in counts.items()}


def _tv(a: Floats, b: Floats) -> float:
    return float(0.5 * np.abs(a - b).sum())


def test_planted_drift_is_visible(events: list[Event], truth: GroundTruth) -> None:
    before, after = _view_mix(events, truth, False), _view_mix(events, truth, True)
    shift: dict[bool, list[float]] = {True: [], False: []}
    for user in set(before) & set(after):
        shift[user in truth.drifted_users].append(_tv(before[user], after[user]))
    assert len(shift[True]) > 200 and len(shift[False]) > 200
    # Sampling noise alone moves a user's mix by ~0.2 (tens of views per half).
    assert np.mean(shift[True]) > 0.55
    assert np.mean(shift[False]) < 0.3
    flagged = {u for u in set(before) & set(after) if _tv(before[u], after[u]) > 0.45}
    assert len(flagged ^ truth.drifted_users) < 0.15 * DEFAULT_CONFIG.users


def test_views_follow_planted_preferences(events: list[Event], truth: GroundTruth) -> None:
    after = _view_mix(events, truth, True)
    users = {u: i for i, u in enumerate(truth.user_ids)}
    to_new, to_old = [], []
    stable_after, stable_before = [], []
    before = _view_mix(events, truth, False)
    for user, mix in after.items():
        i = users[user]
        if user in truth.drifted_users:
            to_new.append(_tv(mix, truth.preferences_after[i]))
            to_old.append(_tv(mix, truth.preferences_before[i]))
        elif user in before:
            stable_after.append(_tv(mix, truth.preferences_before[i]))
            stable_before.append(_tv(before[user], truth.preferences_before[i]))
    assert np.mean(to_new) < 0.2 < 0.5 < np.mean(to_old)
    # Non-drifted users: after drift_ts as close to their preferences as before it.
    assert abs(np.mean(stable_after) - np.mean(stable_before)) < 0.03


def _calibration(p: Floats, y: Floats, bins: int) -> list[tuple[float, float, int]]:
    edges = np.quantile(p, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    return [
        (float(p[which == b].mean()), float(y[which == b].mean()), int((which == b).sum()))
        for b in range(bins)
    ]


def test_conversion_probabilities_are_the_truth(events: list[Event], truth: GroundTruth) -> None:
    users = {u: i for i, u in enumerate(truth.user_ids)}
    items = {item: i for i, item in enumerate(truth.item_ids)}
    sessions: defaultdict[str, list[Event]] = defaultdict(list)
    for e in events:
        sessions[session_of(e)].append(e)
    views: list[Event] = []
    viewed_then_carted: list[bool] = []
    carts: list[Event] = []
    cart_bought: list[bool] = []
    for session in sessions.values():
        for e, after in zip(session, [*session[1:], None], strict=True):
            if e["type"] == "view":  # a cart comes right after its view
                views.append(e)
                viewed_then_carted.append(after is not None and after["type"] == "cart")
        # Purchases of an item follow its carts in order; label that many of its carts bought.
        bought = Counter(e["item_id"] for e in session if e["type"] == "purchase")
        for e in session:
            if e["type"] == "cart":
                carts.append(e)
                cart_bought.append(bought[e["item_id"]] > 0)
                bought[e["item_id"]] -= 1

    def probabilities(rows: list[Event], kind: str) -> Floats:
        u = np.array([users[str(e["user_id"])] for e in rows], dtype=np.int64)
        i = np.array([items[str(e["item_id"])] for e in rows], dtype=np.int64)
        ts = np.array([e["ts"] for e in rows], dtype=float)
        if kind == "cart":
            return truth.cart_probabilities(u, i, ts)
        return truth.purchase_probabilities(u, i, ts)

    cart_bins = _calibration(probabilities(views, "cart"), np.array(viewed_then_carted), 5)
    buy_bins = _calibration(probabilities(carts, "purchase"), np.array(cart_bought), 3)
    for predicted, observed, n in cart_bins + buy_bins:
        assert abs(predicted - observed) < 4 * np.sqrt(predicted * (1 - predicted) / n)
    # The affinity and quality effects are strong enough for a learner to pick up.
    assert cart_bins[-1][1] > 3 * cart_bins[0][1]
    assert buy_bins[-1][1] > 1.5 * buy_bins[0][1]


def test_conversion_probability_follows_the_drift(truth: GroundTruth) -> None:
    user = sorted(truth.drifted_users)[0]
    row = truth.user_index[user]
    gained = int(np.argmax(truth.preferences_after[row] - truth.preferences_before[row]))
    category = truth.categories[gained]
    before = truth.conversion_probability(user, category, truth.drift_ts - 1.0)
    after = truth.conversion_probability(user, category, truth.drift_ts)
    assert 0.0 < before < after < 1.0
    assert truth.preferences(user, truth.drift_ts)[category] == truth.preferences_after[row, gained]
    stable = next(u for u in truth.user_ids if u not in truth.drifted_users)
    assert truth.conversion_probability(stable, category, truth.drift_ts - 1.0) == (
        truth.conversion_probability(stable, category, truth.drift_ts)
    )
    with pytest.raises(KeyError):
        truth.conversion_probability("nobody", category, truth.drift_ts)


def _is_invalid(line: str) -> str | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return "broken_json"
    if "user_id" not in record:
        return "missing_user_id"
    if not isinstance(record["ts"], int | float):
        return "bad_ts"
    if "value" in record and not isinstance(record["value"], int | float):
        return "bad_value"
    return None


def test_write_jsonl_counts_match_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    stats = write_jsonl(path, SMALL, invalid_rate=0.05, duplicate_rate=0.03)
    expected = list(generate(SMALL))
    assert stats.valid == len(expected)
    assert stats.invalid == round(0.05 * len(expected)) > 0
    assert stats.duplicates == round(0.03 * len(expected)) > 0

    lines = path.read_text().splitlines()
    assert len(lines) == stats.lines
    kinds: Counter[str] = Counter()
    first: dict[str, dict[str, object]] = {}
    duplicates = 0
    for line in lines:
        kind = _is_invalid(line)
        if kind is not None:
            kinds[kind] += 1
            continue
        record = json.loads(line)
        if record["event_id"] in first:
            assert record == first[record["event_id"]]
            duplicates += 1
        else:
            first[record["event_id"]] = record
    assert sum(kinds.values()) == stats.invalid
    assert set(kinds) == {"broken_json", "missing_user_id", "bad_ts", "bad_value"}
    assert duplicates == stats.duplicates
    assert list(first.values()) == expected  # every event once, in order, nothing lost


def test_write_jsonl_is_reproducible_and_clean_by_default(tmp_path: Path) -> None:
    a, b, clean = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "clean.jsonl"
    write_jsonl(a, SMALL, invalid_rate=0.1, duplicate_rate=0.1)
    write_jsonl(b, SMALL, invalid_rate=0.1, duplicate_rate=0.1)
    assert a.read_bytes() == b.read_bytes()
    stats = write_jsonl(clean, SMALL)
    assert (stats.invalid, stats.duplicates) == (0, 0)
    assert [json.loads(line) for line in clean.read_text().splitlines()] == list(generate(SMALL))


@pytest.mark.parametrize(
    "field, value",
    [("users", 0), ("drift_at", 1.5), ("drift_fraction", -0.1), ("items", 3), ("seed", -1)],
)
def test_bad_config_is_rejected(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        SyntheticConfig(**{field: value})  # type: ignore[arg-type]


def test_bad_rates_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid_rate"):
        write_jsonl(tmp_path / "x.jsonl", SMALL, invalid_rate=1.5)


def test_returning_logins_mostly_log_into_existing_profiles() -> None:
    """Every session logs in at its first cart or purchase under an id of its own, so each user's
    first login makes the user and the others log into a user who already has a profile."""
    plain = list(generate(SMALL))
    out = list(returning_logins(plain))
    assert [e["event_id"] for e in out] == [e["event_id"] for e in plain]
    logins = [e for e in out if "user_id" in e and "anonymous_id" in e]
    first_logins = {e["user_id"] for e in logins}
    assert logins and [e["type"] for e in logins if e["type"] not in ("cart", "purchase")] == []
    # one login per session that carts or buys, at its first cart or purchase
    buying = {session_of(e) for e in plain if e["type"] in ("cart", "purchase")}
    assert sorted(session_of(e) for e in logins) == sorted(buying)
    assert {e["anonymous_id"] for e in logins} == {f"visitor-{s}" for s in buying}
    share = returning_share(out)
    assert share == pytest.approx(1 - len(first_logins) / len(logins))
    assert share > 0.5
    # the first-purchase stream logs each user in once, into a new id
    assert returning_share(with_logins(plain)) == 0.0
