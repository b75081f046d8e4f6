"""No pickle anywhere (contract: "No pickle anywhere"; issue: "No pickle/joblib anywhere").

Scans every ``.py`` under ``stream_scorer/`` and ``trainer/`` with the ``ast`` module: no import of
pickle, joblib, cloudpickle or dill (nor of their submodules, nor through ``__import__`` /
``importlib.import_module``), no ``torch.load(...)`` without ``weights_only=True`` in the same call,
no ``np.load(..., allow_pickle=True)``. The checker itself is tested on small snippets, so a
checker that finds nothing cannot pass silently.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PACKAGES = ("ja4_core", "stream_scorer", "trainer", "ja4_dev")
FORBIDDEN = {"pickle", "_pickle", "cPickle", "joblib", "cloudpickle", "dill", "shelve"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def violations(source: str, filename: str = "<snippet>") -> list[str]:
    """Pickle uses in one module's source, as ``file:line: what`` strings."""
    tree = ast.parse(source, filename)
    torch_names = {"torch"}       # names bound to the torch module
    load_names: set[str] = set()  # names bound to torch.load itself
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "torch" and alias.asname:
                    torch_names.add(alias.asname)
        elif isinstance(node, ast.ImportFrom) and node.module == "torch":
            for alias in node.names:
                if alias.name == "load":
                    load_names.add(alias.asname or "load")
    found: list[str] = []

    def bad(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN:
                    bad(node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in FORBIDDEN:
                bad(node, f"from {module} import ...")
            for alias in node.names:
                if alias.name in FORBIDDEN:
                    bad(node, f"from {module} import {alias.name}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            kwargs = {k.arg: k.value for k in node.keywords if k.arg}
            if name in ("__import__", "importlib.import_module", "import_module") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) \
                        and arg.value.split(".")[0] in FORBIDDEN:
                    bad(node, f"{name}({arg.value!r})")
            is_torch_load = (name.endswith(".load") and name.rsplit(".", 1)[0] in torch_names) \
                or name in load_names
            if is_torch_load and not _is_true(kwargs.get("weights_only")):
                bad(node, f"{name}(...) without weights_only=True")
            if name.split(".")[-1] == "load" and name.split(".")[0] in ("np", "numpy") \
                    and "allow_pickle" in kwargs and not (isinstance(kwargs["allow_pickle"], ast.Constant)
                                                          and kwargs["allow_pickle"].value is False):
                bad(node, f"{name}(..., allow_pickle=...)")
    return found


def source_files() -> list[Path]:
    files = sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))
    return files


def test_the_packages_are_where_expected():
    files = source_files()
    names = {p.relative_to(REPO).as_posix() for p in files}
    assert {"ja4_core/bundle.py", "ja4_core/detectors/autoencoder.py", "trainer/fit.py"} <= names


def test_no_pickle_in_stream_scorer_and_trainer():
    found = []
    for path in source_files():
        found += violations(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert found == [], "pickle use found:\n" + "\n".join(found)


def test_the_autoencoder_loads_with_weights_only():
    """The one torch.load the product needs is there, and passes the checker."""
    src = (REPO / "ja4_core/detectors/autoencoder.py").read_text()
    assert "torch.load(" in src and violations(src) == []


@pytest.mark.parametrize("snippet", [
    "import pickle",
    "import pickle as p",
    "import os, cloudpickle",
    "import joblib.numpy_pickle",
    "from joblib import dump",
    "from dill import loads",
    "from _pickle import loads",
    "from . import pickle",
    "import shelve",
    "m = __import__('pickle')",
    "import importlib\nm = importlib.import_module('dill')",
    "import torch\ntorch.load('x.pt')",
    "import torch\ntorch.load('x.pt', map_location='cpu')",
    "import torch\ntorch.load('x.pt', weights_only=False)",
    "import torch\nflag = True\ntorch.load('x.pt', weights_only=flag)",
    "import torch as T\nT.load('x.pt')",
    "from torch import load\nload('x.pt')",
    "from torch import load as tl\ntl('x.pt')",
    "import numpy as np\nnp.load('x.npy', allow_pickle=True)",
])
def test_checker_flags_pickle_uses(snippet):
    assert violations(snippet), snippet


@pytest.mark.parametrize("snippet", [
    "import torch\ntorch.load('x.pt', weights_only=True)",
    "import torch\ntorch.load(path, weights_only=True, map_location='cpu')",
    "import json\njson.load(fh)",
    "import orjson\norjson.loads(b'{}')",
    "import numpy as np\nnp.load('x.npz')",
    "import numpy as np\nnp.load('x.npz', allow_pickle=False)",
    "from isotree import IsolationForest\nIsolationForest.import_model('m')",
    "text = 'pickle is not used here'",
])
def test_checker_accepts_safe_code(snippet):
    assert violations(snippet) == [], snippet
