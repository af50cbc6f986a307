"""The package layout: the command line loads its commands lazily, the stored-state layout names
everything stored, and no module imports one that imports it back."""

from __future__ import annotations

import ast
import importlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import msgspec
import pytest
from numba.core import types

import liveprofile
from liveprofile.api import replay
from liveprofile.cli import COMMANDS, main
from liveprofile.config import PipelineConfig, RiskConfig, RunConfig
from liveprofile.events.schema import FORGET
from liveprofile.store import layout

HEAVY = ("numba", "pandas", "river", "numpy", "fastapi", "redis", "liveprofile.api")


def _imported_after(code: str) -> set[str]:
    """The heavy modules a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return set(done.stdout.split())


def test_help_imports_no_heavy_module() -> None:
    code = (
        "from click.testing import CliRunner\n"
        "from liveprofile.cli import main\n"
        "result = CliRunner().invoke(main, ['--help'])\n"
        "assert result.exit_code == 0 and 'worker' in result.output, result.output"
    )
    assert _imported_after(code) == set()


def test_a_command_imports_what_it_needs_when_it_runs() -> None:
    code = (
        "from click.testing import CliRunner\n"
        "from liveprofile.cli import main\n"
        "result = CliRunner().invoke(main, ['profile', 'u1', '--store', 'memory://'])\n"
        "assert result.exit_code != 0, result.output"
    )
    assert "liveprofile.api" in _imported_after(code)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_listed_command_loads_under_its_name(name: str) -> None:
    command = main.get_command(click.Context(main), name)
    assert isinstance(command, click.Command) and command.name == name
    assert command.help and len(command.help.split()) > 5


def test_listed_commands_are_all_there_is() -> None:
    assert main.list_commands(click.Context(main)) == sorted(COMMANDS)
    assert main.get_command(click.Context(main), "no-such-command") is None


def test_the_layout_names_everything_a_replay_stores(tmp_path: Path) -> None:
    """Every namespace and meta blob a replay writes (identity links, expiry, erasure, anomaly
    scores and segments included) is one that :mod:`liveprofile.store.layout` declares."""
    day = 86400
    events: list[dict[str, object] | str] = [
        {"event_id": "0", "user_id": "dan", "type": "view", "ts": 0, "item_id": "i2"},
        {"event_id": "1", "anonymous_id": "a1", "type": "view", "ts": 4 * day, "item_id": "i1"},
        {
            "event_id": "2",
            "user_id": "ann",
            "anonymous_id": "a1",
            "type": "purchase",
            "ts": 4 * day + 60,
            "item_id": "i1",
            "category": "tea",
            "value": 9.0,
        },
        {"event_id": "3", "user_id": "bob", "type": "view", "ts": 4 * day, "item_id": "i2"},
        {"event_id": "4", "user_id": "bob", "type": FORGET, "ts": 4 * day + 1},
        {"event_id": "5", "user_id": "cy", "type": "view", "ts": 5 * day, "item_id": "i2"},
        "not json",
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(e if isinstance(e, str) else json.dumps(e) for e in events))
    config = PipelineConfig(
        segments={"buyers": "frequency >= 1"},
        run=RunConfig(batch_size=2, profile_ttl="2d"),
        risk=RiskConfig(anomaly=True),
    )
    replay(path, store=tmp_path / "p.db", config=config, progress=False)
    db = sqlite3.connect(tmp_path / "p.db")
    namespaces = {ns for (ns,) in db.execute("SELECT DISTINCT ns FROM rows")}
    metas = {name for (name,) in db.execute("SELECT name FROM meta")}
    db.close()
    rows = {layout.PROFILES, layout.ITEMS, layout.PENDING, layout.DEDUP, layout.ALIASES}
    rows |= {layout.EXPIRY, layout.DEAD_LETTERS, layout.LINKS_BY_TARGET}
    assert {layout.PROFILES, layout.ALIASES, layout.EXPIRY, layout.LINKS_BY_TARGET} <= namespaces
    assert {ns for ns in namespaces if not ns.startswith(layout.SEGMENT_PREFIX)} <= rows
    assert layout.segment_namespace("buyers") in namespaces
    tasks = {f(t.name) for t in config.tasks for f in (layout.model_meta, layout.metrics_meta)}
    blobs = {layout.CHECKPOINT, layout.CONFIG, layout.POPULATION, layout.SEGMENT_HISTORY}
    assert metas == blobs | {layout.ANOMALY} | tasks


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body (also inside functions,
    which run sooner or later), except under ``if TYPE_CHECKING:``."""
    root = Path(liveprofile.__file__).parent
    files = {}
    for path in root.rglob("*.py"):
        name = ".".join(("liveprofile", *path.relative_to(root).with_suffix("").parts))
        files[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text())
        hidden = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for node in ast.walk(block)
        }
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in hidden:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module."""
    reach = {m: set() for m in graph}
    for start in graph:
        todo = list(graph[start])
        while todo:
            m = todo.pop()
            if m not in reach[start]:
                reach[start].add(m)
                todo.extend(graph[m])
    out: list[set[str]] = []
    for m in sorted(graph):
        group = {m} | {o for o in reach[m] if m in reach[o]}
        if len(group) > 1 and group not in out:
            out.append(group)
    return out


def test_no_import_cycles() -> None:
    cycles = _cycles(_import_graph())
    assert cycles == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [{"a", "b", "c"}]


def test_lower_layers_do_not_import_the_facade_or_the_command_line() -> None:
    graph = _import_graph()
    top = {"liveprofile", "liveprofile.api", "liveprofile.cli"}
    for module, imports in graph.items():
        if module.startswith(("liveprofile.cli", "liveprofile.api")) or module == "liveprofile":
            continue
        assert not imports & top, f"{module} imports {sorted(imports & top)}"


def test_redis_code_is_in_one_place_and_the_embedded_runner_needs_none() -> None:
    # Redis code lives in liveprofile.redis: only it (and commands that open a client) import
    # redis-py, the engine imports none of it, and the Python API with the embedded runner on
    # SQLite loads no redis-py at all
    graph = _import_graph()
    engine = {m: i for m, i in graph.items() if m.startswith("liveprofile.engine")}
    assert "liveprofile.engine.local" in engine
    for module, imports in engine.items():
        assert not {i for i in imports if i.startswith("liveprofile.redis")}, module
    root = Path(liveprofile.__file__).parent
    for path in root.rglob("*.py"):
        if path.relative_to(root).parts[0] in ("redis", "cli"):  # (cli: inside its commands)
            continue
        tree = ast.parse(path.read_text())
        used = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        used |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in used if m.split(".")[0] == "redis"}, f"{path} imports redis-py"
    code = (
        "import tempfile, pathlib\n"
        "from liveprofile.api import replay\n"
        "from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl\n"
        "folder = pathlib.Path(tempfile.mkdtemp())\n"
        "write_jsonl(folder / 'e.jsonl', SyntheticConfig(users=5, days=1))\n"
        "replay(folder / 'e.jsonl', store=folder / 'p.db', progress=False)"
    )
    assert "redis" not in _imported_after(code)


def test_a_store_built_before_a_new_setting_opens_with_its_default() -> None:
    from liveprofile.config import PipelineConfig
    from liveprofile.errors import ConfigError
    from liveprofile.store.layout import CONFIG, check_config
    from liveprofile.store.memory import MemoryStore

    store = MemoryStore()
    store.setup()
    old = msgspec.json.decode(msgspec.json.encode(PipelineConfig()))
    del old["run"]["max_batch_delay"]  # as written before the setting existed
    store.commit({}, {CONFIG: msgspec.json.encode(old)})
    check_config(store, PipelineConfig())
    other = PipelineConfig(run=RunConfig(batch_size=PipelineConfig().run.batch_size + 1))
    with pytest.raises(ConfigError, match="different pipeline config"):
        check_config(store, other)


#: the most loose arrays a compiled function takes; more belong together in a named record
LOOSE_ARRAYS = 5
#: how the package marks a function numba compiles (``liveprofile.engine.jit``'s or numba's own)
_COMPILES = {"jit", "_jit", "leaf", "numba.njit(cache=True, nogil=True)"}


def _compiled_functions() -> dict[tuple[str, str], ast.FunctionDef]:
    """(module, name) -> definition of every function of the package that numba compiles."""
    root = Path(liveprofile.__file__).parent
    out = {}
    for path in root.rglob("*.py"):
        module = ".".join(("liveprofile", *path.relative_to(root).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                ast.unparse(d) in _COMPILES for d in node.decorator_list
            ):
                out[module, node.name] = node
    return out


def _read_as_arrays(node: ast.FunctionDef) -> set[str]:
    """The parameters ``node`` reads as arrays itself: indexed, or asked their shape (a record's
    arrays are read by name, ``users.count[u]``, and do not count)."""
    params = {a.arg for a in node.args.args}
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Subscript | ast.Attribute) and isinstance(n.value, ast.Name):
            as_array = isinstance(n, ast.Subscript) or n.attr in ("shape", "size", "ndim")
            if as_array and n.value.id in params:
                out.add(n.value.id)
    return out


def test_the_array_reader_finds_loose_arrays() -> None:
    tree = ast.parse("def f(a, rec, b, k):\n    return a[k] + rec.x[k] + b.shape[0] + k")
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    assert _read_as_arrays(function) == {"a", "b"}


def test_compiled_functions_take_records_not_loose_arrays(tmp_path: Path) -> None:
    """No compiled function takes more than a handful of loose arrays: arrays that belong
    together travel as one named record (``liveprofile.engine.records``, ``OpArrays``, ...),
    so two arrays of one dtype cannot be swapped by position. Checked on the source of every
    compiled function, and on numba's own types of those a replay with every lifecycle feature
    and both learner kinds compiled or loaded."""
    functions = _compiled_functions()
    assert len(functions) > 100
    arrays = {key: _read_as_arrays(f) for key, f in functions.items()}
    loose = {key: sorted(a) for key, a in arrays.items() if len(a) > LOOSE_ARRAYS}
    assert not loose, f"more than {LOOSE_ARRAYS} loose arrays: {loose}"

    from liveprofile.config import LabelConfig, LearnerConfig, TaskConfig

    day = 86400
    events = [
        {"event_id": "0", "user_id": "dan", "type": "view", "ts": 0, "item_id": "i2"},
        {"event_id": "1", "anonymous_id": "a1", "type": "view", "ts": 4 * day, "item_id": "i1"},
        {"event_id": "2", "user_id": "ann", "anonymous_id": "a1", "type": "purchase",
         "ts": 4 * day + 60, "item_id": "i1", "category": "tea", "value": 9.0},
        {"event_id": "3", "user_id": "bob", "type": "view", "ts": 4 * day, "item_id": "i2"},
        {"event_id": "4", "user_id": "bob", "type": FORGET, "ts": 4 * day + 1},
        {"event_id": "5", "user_id": "cy", "type": "purchase", "ts": 5 * day, "item_id": "i2"},
        {"event_id": "6", "user_id": "dan", "type": "view", "ts": 9 * day, "item_id": "i1"},
    ]  # fmt: skip
    tuned = LearnerConfig(kind="tuned", params={"challengers": [{"kind": "ogd", "params": {}}]})
    carts = LabelConfig("type", positive=["cart"])
    config = PipelineConfig(
        tasks=[*PipelineConfig().tasks, TaskConfig("tuned", ["view"], carts, tuned)],
        segments={"buyers": "frequency >= 1"},
        run=RunConfig(batch_size=3, profile_ttl="2d"),
        risk=RiskConfig(anomaly=True),
    )
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in events))
    replay(path, store=tmp_path / "p.db", config=config, progress=False)
    seen = {}
    for (module, name), _ in functions.items():
        dispatcher = getattr(importlib.import_module(module), name)
        for signature in getattr(dispatcher, "signatures", []):
            arrays = sum(isinstance(a, types.Array) for a in signature)
            seen[module, name] = max(seen.get((module, name), 0), arrays)
    entries = {
        ("liveprofile.engine.kernel", "run"),
        ("liveprofile.learn.linear", "_ftrl_run"),
        ("liveprofile.learn.linear", "_ogd_run"),
        ("liveprofile.learn.tuned", "_walk"),
        ("liveprofile.learn.metrics", "_record_all"),
        ("liveprofile.engine.countmaps", "_write"),
        ("liveprofile.engine.packing", "_encode_items"),
    }
    assert entries <= set(seen), entries - set(seen)
    assert {k: n for k, n in seen.items() if n > LOOSE_ARRAYS} == {}
