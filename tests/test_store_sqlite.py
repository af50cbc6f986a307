"""The SQLite store's model deltas: a large model checkpoint is written whole once, then as the
coordinates each batch changed, and reads back as the last one committed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import liveprofile
from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.errors import StoreError
from liveprofile.learn.linear import FTRLProximal
from liveprofile.learn.registry import dump_learner, load_learner
from liveprofile.store import sqlite as sqlite_store
from liveprofile.store.base import DELTA_FRACTION
from liveprofile.store.sqlite import DELTA_MIN_BYTES, SQLiteStore


def _model(seed: int = 0) -> FTRLProximal:
    model = FTRLProximal(bits=16)
    rng = np.random.default_rng(seed)
    for n in range(3000):
        model.learn_one({f"f{rng.integers(60000)}": 1.0 for _ in range(8)}, n % 3 == 0)
    return model


def _learn_a_little(model: FTRLProximal, batch: int) -> None:
    for n in range(30):
        model.learn_one({f"b{batch}-{n}": 1.0, f"f{n}": 0.5}, n % 2 == 0)


def _stored(db: SQLiteStore, name: str) -> tuple[int, int, int]:
    """(deltas, their bytes, bytes of the whole write) of a model."""
    deltas, size = db.db.execute(
        "SELECT count(*), coalesce(sum(length(value)), 0) FROM meta_delta "
        "WHERE name = ? AND seq > 0",
        (name,),
    ).fetchone()
    (whole,) = db.db.execute("SELECT length(value) FROM meta WHERE name = ?", (name,)).fetchone()
    return int(deltas), int(size), int(whole)


def test_a_model_is_written_whole_once_then_as_deltas(tmp_path: Path) -> None:
    db = SQLiteStore(tmp_path / "s.db")
    model = _model()
    first = dump_learner(model)
    assert len(first) >= DELTA_MIN_BYTES
    db.commit({}, {"model/t": first})
    blobs = [first]
    for batch in range(4):
        _learn_a_little(model, batch)
        blobs.append(dump_learner(model))
        db.commit({"profile": {"u": b"x"}}, {"model/t": blobs[-1], "checkpoint": b"%d" % batch})
        assert db.get_meta("model/t") == blobs[-1]
    deltas, size, whole = _stored(db, "model/t")
    assert deltas == 4 and whole == len(first)  # the whole write was not touched again
    assert size < len(first) / 10
    db.close()
    reader = SQLiteStore(tmp_path / "s.db", read_only=True)
    assert reader.get_meta("model/t") == blobs[-1]
    assert load_learner(reader.get_meta("model/t") or b"").predict_proba_one({"f1": 0.5}) == (
        model.predict_proba_one({"f1": 0.5})
    )
    reader.close()


def test_deltas_adding_up_to_half_the_model_mean_a_whole_write(tmp_path: Path) -> None:
    db = SQLiteStore(tmp_path / "s.db")
    model = _model()
    db.commit({}, {"model/t": dump_learner(model)})
    wholes = 0
    for batch in range(12):
        rng = np.random.default_rng(batch)
        for n in range(600):  # a large change each time
            model.learn_one({f"f{rng.integers(60000)}": 1.0 for _ in range(8)}, n % 2 == 0)
        blob = dump_learner(model)
        db.commit({}, {"model/t": blob})
        deltas, size, whole = _stored(db, "model/t")
        wholes += deltas == 0
        assert size <= whole * DELTA_FRACTION
        assert db.get_meta("model/t") == blob
    assert wholes >= 1


def test_another_writer_in_between_means_a_whole_write(tmp_path: Path) -> None:
    a, b = SQLiteStore(tmp_path / "s.db"), SQLiteStore(tmp_path / "s.db")
    model = _model()
    a.commit({}, {"model/t": dump_learner(model)})
    _learn_a_little(model, 0)
    a.commit({}, {"model/t": dump_learner(model)})
    other = _model(seed=5)
    b.commit({}, {"model/t": dump_learner(other)})  # knows nothing of a's deltas
    assert a.get_meta("model/t") == dump_learner(other)
    _learn_a_little(model, 1)
    a.commit({}, {"model/t": dump_learner(model)})  # a's last write is no longer stored
    assert b.get_meta("model/t") == dump_learner(model)
    assert _stored(a, "model/t")[0] == 0
    a.close()
    b.close()


def test_a_store_from_before_deltas_is_read_and_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE rows (ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
        "PRIMARY KEY (ns, key)) WITHOUT ROWID;"
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;"
    )
    model = _model()
    old.execute("INSERT INTO meta VALUES ('model/t', ?)", (dump_learner(model),))
    old.commit()
    old.close()
    reader = SQLiteStore(path, read_only=True)
    assert reader.get_meta("model/t") == dump_learner(model)
    reader.close()
    writer = SQLiteStore(path)
    _learn_a_little(model, 0)
    writer.commit({}, {"model/t": dump_learner(model)})
    _learn_a_little(model, 1)
    writer.commit({}, {"model/t": dump_learner(model)})
    assert writer.get_meta("model/t") == dump_learner(model)
    assert writer.db.execute("PRAGMA user_version").fetchone()[0] == sqlite_store.STORE_SCHEMA
    writer.close()


def test_a_store_of_a_newer_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SQLiteStore(path).setup()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={sqlite_store.STORE_SCHEMA + 1}")
    db.close()
    for read_only in (False, True):
        with pytest.raises(StoreError, match="upgrade liveprofile"):
            SQLiteStore(path, read_only=read_only).setup()


def test_a_replay_with_deltas_stores_the_same_model_as_whole_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = list(generate(SyntheticConfig(users=150, items=80, days=6, seed=3)))
    source = tmp_path / "e.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in events))
    config = PipelineConfig.from_toml("[run]\nbatch_size = 300\n")
    monkeypatch.setattr(sqlite_store, "DELTA_MIN_BYTES", 1)  # every model, however small
    liveprofile.replay(source, store=tmp_path / "delta.db", config=config, progress=False)
    monkeypatch.setattr(sqlite_store, "DELTA_MIN_BYTES", 1 << 40)
    monkeypatch.setattr(SQLiteStore, "writes_model_deltas", False)  # handed whole models
    liveprofile.replay(source, store=tmp_path / "whole.db", config=config, progress=False)
    delta, whole = SQLiteStore(tmp_path / "delta.db"), SQLiteStore(tmp_path / "whole.db")
    names = [n for (n,) in whole.db.execute("SELECT name FROM meta WHERE name LIKE 'model/%'")]
    assert names
    for name in names:
        assert delta.get_meta(name) == whole.get_meta(name)
    assert delta.db.execute("SELECT count(*) FROM meta_delta WHERE seq > 0").fetchone()[0] > 0
    assert whole.db.execute("SELECT count(*) FROM meta_delta").fetchone()[0] == 0
    delta.close()
    whole.close()


def test_rows_keep_large_values_out_of_the_key_b_tree(tmp_path: Path) -> None:
    # in a WITHOUT ROWID table a value of megabytes can become an interior page's divider, read
    # whole by every seek past it; a rowid table keeps values out of the (ns, key) index
    store = SQLiteStore(tmp_path / "s.db")
    store.setup()
    sql = store.db.execute("SELECT sql FROM sqlite_master WHERE name = 'rows'").fetchone()[0]
    assert "WITHOUT ROWID" not in sql.upper()
    big = bytes(range(256)) * 8_000
    items = {f"i{k:05d}": k.to_bytes(4, "big") * 10 for k in range(3_000)}
    store.commit({"pending": {"p": big}, "item": items}, {})
    store.commit({"item": {"i00007": b"new", "i02999": None}}, {})
    assert store.read("pending", ["p"]) == [big]
    assert store.read("item", ["i00000", "i00007", "i02999"]) == [items["i00000"], b"new", None]
    assert store.count("item") == 2_999
    store.close()
