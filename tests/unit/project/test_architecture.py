"""The product's shape, checked from its own code (issue 14, items 2, 5 and 8).

- The import graph, built from every ``import`` in the product's files (module level and inside
  functions alike, read with :mod:`ast`), has no cycle; ``stream_scorer`` and ``trainer`` do not
  import each other; ``ja4_core`` imports neither; ``ja4_dev`` imports neither at module level.
- Importing any product module has no side effect: with a bad setting in the environment it
  does not raise, creates no file, and leaves the GIL switch interval and torch's threads as
  they were.
- Each CLI command's ``--help`` lists its own options first and only its own process's settings.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PACKAGES = ("ja4_core", "stream_scorer", "trainer", "ja4_dev")


def product_modules() -> dict[str, Path]:
    """Every module of the product packages, by dotted name."""
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The product module an imported dotted name lands in (its longest known prefix)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_edges(modules: dict[str, Path]) -> set[tuple[str, str, bool]]:
    """(importer, imported, at module level) for every product-to-product import."""
    edges: set[tuple[str, str, bool]] = set()
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        in_function: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                in_function.update(id(child) for child in ast.walk(node) if child is not node)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importer's package
                    pkg = name.split(".") if is_package else name.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join([*pkg, base] if base else pkg)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for t in targets:
                hit = _target(t, modules)
                if hit is not None and hit != name:
                    edges.add((name, hit, id(node) not in in_function))
    return edges


def strongly_connected(nodes: list[str], edges: set[tuple[str, str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of a directed graph."""
    graph: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        graph[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for n in nodes:
        if n not in index:
            visit(n)
    return out


def _pkg(module: str) -> str:
    return module.split(".")[0]


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], set[tuple[str, str, bool]]]:
    modules = product_modules()
    return modules, import_edges(modules)


def _check_the_checker(tmp_path: Path) -> None:
    """The graph sees an import inside a function and a relative one, and finds their cycle."""
    (tmp_path / "p").mkdir()
    code = {"p": ("__init__.py", ""), "p.a": ("a.py", "def f():\n    from p.b import x\n"),
            "p.b": ("b.py", "from . import a\n")}
    modules = {}
    for name, (file, text) in code.items():
        modules[name] = tmp_path / "p" / file
        modules[name].write_text(text)
    edges = import_edges(modules)
    assert ("p.a", "p.b", False) in edges and ("p.b", "p.a", True) in edges
    assert ["p.a", "p.b"] in strongly_connected(list(modules), {(a, b) for a, b, _ in edges})


def test_no_import_cycles(graph, tmp_path) -> None:
    _check_the_checker(tmp_path)
    modules, edges = graph
    cycles = [c for c in strongly_connected(sorted(modules), {(a, b) for a, b, _ in edges}) if len(c) > 1]
    detail = {" <-> ".join(c): sorted(f"{a} -> {b}" for a, b, _ in edges if a in c and b in c) for c in cycles}
    assert not cycles, f"import cycles: {json.dumps(detail, indent=1)}"


def test_the_processes_do_not_import_each_other_and_the_core_imports_neither(graph) -> None:
    """Also: the dev package (demo, simulator, brokers) imports the processes only inside
    functions, so that importing it (the tests do) loads neither process."""
    _, edges = graph
    crossing = sorted(f"{a} -> {b}" for a, b, at_top in edges
                      if {_pkg(a), _pkg(b)} == {"stream_scorer", "trainer"}
                      or (_pkg(a) == "ja4_core" and _pkg(b) in ("stream_scorer", "trainer", "ja4_dev"))
                      or (at_top and _pkg(a) == "ja4_dev" and _pkg(b) in ("stream_scorer", "trainer")))
    assert not crossing, crossing


# --- importing has no side effects ------------------------------------------------------------

_IMPORT_ALL = r"""
import gc, importlib, json, os, sys
import torch

threads, interval, collector = torch.get_num_threads(), sys.getswitchinterval(), gc.get_threshold()
os.environ["SCORER_THREADS"] = str(threads + 1)  # a worker start would set torch to this
failed = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except BaseException as exc:  # noqa: BLE001 - report every module, not the first
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"failed": failed, "threads": [threads, torch.get_num_threads()],
                  "interval": [interval, sys.getswitchinterval()],
                  "gc": [collector, gc.get_threshold(), gc.get_freeze_count()],
                  "files": sorted(str(p) for p in __import__("pathlib").Path(".").rglob("*"))}))
"""


@pytest.mark.parametrize("bad", [{"SCORER_BATCH_MAX": "0"}, {}], ids=["bad-setting", "good-settings"])
def test_importing_any_product_module_has_no_side_effect(tmp_path, bad) -> None:
    import os

    names = [n for n in product_modules() if not n.endswith("__main__")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCORER_", "KAFKA_", "TOPIC_", "MODEL_"))}
    env.update(bad, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run([sys.executable, "-c", _IMPORT_ALL, json.dumps(names)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}
    assert report["files"] == [], "importing created files in the working directory"
    assert report["interval"][0] == report["interval"][1], "importing changed sys.getswitchinterval()"
    assert report["threads"][0] == report["threads"][1], "importing changed torch's threads"
    assert report["gc"][0] == report["gc"][1] and report["gc"][2] == 0, "importing tuned the garbage collector"


# --- --help: own options first, own process's settings only ------------------------------------

def _help(module: str, *argv: str) -> str:
    out = subprocess.run([sys.executable, "-m", module, *argv, "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={**__import__("os").environ, "COLUMNS": "120"})
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("module,argv,own,foreign", [
    ("trainer.cli", ["load"], "--file", ["SCORER_BATCH_MAX", "SINK_BATCH_MAX", "SCORER_WEB_PORT"]),
    ("trainer.cli", ["run-once"], "--force", ["SCORER_BATCH_MAX", "SINK_APP_ID"]),
    ("stream_scorer.cli", ["worker"], "--help", ["BASELINE_DAYS", "SINK_BATCH_MAX", "EIF_NTREES"]),
    ("stream_scorer.cli", ["sink"], "--help", ["BASELINE_DAYS", "SCORER_BATCH_MAX", "MODEL_STORE"]),
])
def test_help_shows_own_options_first_and_only_own_settings(module, argv, own, foreign) -> None:
    text = _help(module, *argv)
    for env in foreign:
        assert env not in text, f"{module} {argv} --help mentions {env}"
    assert "KAFKA_BOOTSTRAP_SERVERS" in text and "LOG_LEVEL" in text  # the shared ones stay
    settings_at = text.index("\nsettings")
    assert text.index(own) < settings_at, "the command's own options come before the settings"
    usage = text[:text.index("\n\n")]
    assert "--kafka-bootstrap-servers" not in usage, "the usage line names the command's options, not every setting"


def test_trainer_load_help_is_short() -> None:
    """It printed 235 lines, every setting of both processes."""
    assert len(_help("trainer.cli", "load").splitlines()) < 150
