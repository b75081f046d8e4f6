"""The demo and the compose file run signed (issue 13, item 3)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from ja4_dev.demo import Demo
from ja4_core.settings import load_settings

ROOT = Path(__file__).resolve().parents[3]


def test_demo_gives_every_process_one_fresh_signing_key(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CONTROL_SIGNING_KEY", raising=False)
    args = SimpleNamespace(var=str(tmp_path), replicas=2)
    demo = Demo(load_settings({}), args)
    keys = {demo.env("localhost:1")["CONTROL_SIGNING_KEY"], demo.env("localhost:2")["CONTROL_SIGNING_KEY"]}
    assert len(keys) == 1 and re.fullmatch(r"[0-9a-f]{64}", keys.pop())
    other = Demo(load_settings({}), args).env("localhost:1")["CONTROL_SIGNING_KEY"]
    assert other != demo.env("localhost:1")["CONTROL_SIGNING_KEY"], "a new key per run"
    assert Demo(load_settings({"CONTROL_SIGNING_KEY": "mine"}), args).env("x")["CONTROL_SIGNING_KEY"] == "mine"


def test_compose_requires_a_signing_key() -> None:
    text = (ROOT / "docker-compose.kafka.yml").read_text(encoding="utf-8")
    values = re.findall(r"^\s+CONTROL_SIGNING_KEY:\s*(.+)$", text, flags=re.M)
    assert len(values) == 2, values  # the scorer and the trainer
    assert all(v.startswith('"${CONTROL_SIGNING_KEY:?') for v in values), values
