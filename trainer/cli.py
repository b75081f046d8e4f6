"""``stream-trainer``: the trainer's command line.

Commands::

    stream-trainer init-db                       create the ClickHouse schema (idempotent)
    stream-trainer load --file rows.ndjson|.csv  fill the feature table from a file
    stream-trainer load --simulate --days 7 --rate 300 --bot-share 0.1 --label-share 0.2
    stream-trainer label --file labels.csv|.ndjson [--source S]  import analyst labels into soc_labels
    stream-trainer run-once [--force]            decide, train, announce, report, exit
    stream-trainer loop                          run-once on a schedule until SIGTERM/Ctrl-C
    stream-trainer status [--json]               versions, current, decisions, control topic
    stream-trainer activate VERSION              operator rollback to a stored version

Every trainer setting is an environment variable and a flag of each command (``--model-store``,
``--clickhouse-url``, ...; ``--help`` lists them after the command's own options). Exit codes:
0 done (also when another trainer holds the lock: nothing to do), 1 failed (one line on
stderr says why), 2 bad setting or usage.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ja4_core.bundle import read_manifest
from ja4_core.errors import ConfigError, Ja4StreamError
from ja4_core.features import DEFAULT_FEATURES, csv_cell
from ja4_core.gc_steps import run_process
from ja4_core.logs import configure_logging, mask_url, redact
from ja4_core.settings import TRAINER, Settings, add_setting_flags, load_settings

log = logging.getLogger("trainer")

PROG = "stream-trainer"
LOAD_BATCH = 20_000
E_LOAD_SOURCE = "load needs exactly one of --file PATH or --simulate"


# --- logging -----------------------------------------------------------------------------

def setup_logging(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    for noisy in ("clickhouse_connect", "matplotlib", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print_table(title: str, rows: Sequence[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, redact(value))
    Console(soft_wrap=True).print(table)


# --- loading -----------------------------------------------------------------------------

def read_rows(path: Path, fmt: str | None = None) -> Iterator[dict[str, Any]]:
    """Records from an NDJSON file (one object, or an array of objects, per line) or a CSV
    file with a header, each cell read by :func:`ja4_core.features.csv_cell` (the rule
    ``stream-scorer produce --file`` uses too: numbers parsed, empty cells = missing)."""
    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "ndjson")
    with open(path, newline="" if fmt == "csv" else None, encoding="utf-8") as fh:
        if fmt == "csv":
            for row in csv.DictReader(fh):
                yield {k: csv_cell(k, v) for k, v in row.items() if k is not None}
            return
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise Ja4StreamError(f"{path}:{lineno}: not JSON ({exc})") from None
            for obj in item if isinstance(item, list) else [item]:
                if not isinstance(obj, dict):
                    raise Ja4StreamError(f"{path}:{lineno}: not a JSON object")
                yield obj


def _batches(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def cmd_init_db(args: argparse.Namespace, settings: Settings) -> int:
    from ja4_core.clickhouse_io import connect

    with connect(settings.clickhouse_url) as ch:
        ch.init_db(settings.features or DEFAULT_FEATURES)
        print(f"database {ch.database} ready ({mask_url(settings.clickhouse_url)}): view_ai_features_1h, ml_all_scores, "
              "soc_labels, model_training_history")
    return 0


def cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    from ja4_core.clickhouse_io import connect

    if bool(args.file) == bool(args.simulate):
        raise ConfigError(E_LOAD_SOURCE)
    with connect(settings.clickhouse_url) as ch:
        ch.init_db(settings.features or DEFAULT_FEATURES)
        if args.file:
            total = 0
            for batch in _batches(read_rows(Path(args.file), args.format), LOAD_BATCH):
                total += ch.insert_features(batch)
                log.info("loaded %d rows", total)
            print(f"loaded {total} rows from {args.file} into {ch.database}.view_ai_features_1h")
            return 0
        from ja4_dev.simulator import TrafficSimulator, analyst_label

        if not 0.0 <= args.bot_share <= 1.0 or not 0.0 <= args.label_share <= 1.0:
            raise ConfigError("--bot-share and --label-share must be between 0 and 1")
        sim = TrafficSimulator(seed=args.seed, bot_share=args.bot_share)
        rows = sim.history(args.days, args.rate)
        for start in range(0, len(rows), LOAD_BATCH):
            ch.insert_features(rows[start:start + LOAD_BATCH])
        rng = np.random.default_rng(args.seed)
        chosen = [r for r in rows if rng.random() < args.label_share]
        labels = [analyst_label(r) for r in chosen]  # with the true bot kind (recall per kind)
        ch.insert_labels(labels)
        n_bots = sum(r["label"] == "bot" for r in rows)
        print(f"simulated {len(rows)} rows ({n_bots} bots) over {args.days:g} days into {ch.database}; "
              f"{len(labels)} analyst labels ({sum(lb['label'] == 'bot' for lb in labels)} bot)")
    return 0


# --- running -----------------------------------------------------------------------------

def cmd_run_once(args: argparse.Namespace, settings: Settings) -> int:
    from trainer.run import Trainer

    result = Trainer(settings).run_once(force=args.force)
    _print_table(f"{PROG} run-once", result.summary())
    if result.decision == "locked":
        print(result.reason, file=sys.stderr)
        return 0
    if result.publish_error:
        print(f"{PROG}: {result.current} is current on disk but was not announced: {redact(result.publish_error)}",
              file=sys.stderr)
        return 1
    return 0


def cmd_loop(args: argparse.Namespace, settings: Settings) -> int:
    from trainer.run import Trainer, loop

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("received %s: stopping after the current step", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return loop(settings, stop, trainer=Trainer(settings, stop=stop),
                    on_result=lambda r: log.info("run: %s", "; ".join(f"{k}={v}" for k, v in r.summary()[:5])))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_activate(args: argparse.Namespace, settings: Settings) -> int:
    from trainer.run import Trainer

    result = Trainer(settings).activate(args.version)
    _print_table(f"{PROG} activate", result.summary())
    if result.publish_error:
        print(f"{PROG}: CURRENT now names {args.version}, but the announcement failed: {redact(result.publish_error)}; "
              "the next run-once/loop iteration announces it", file=sys.stderr)
        return 1
    return 0


def cmd_champion(args: argparse.Namespace, settings: Settings) -> int:
    """``promote`` / ``retire``: the operator's verdict on the challenger (default: the live one)."""
    from ja4_core.bundle import ModelStore
    from trainer.champion_step import operator_decision

    judged = operator_decision(settings, ModelStore(settings.model_store), args.command, args.version)
    _print_table(f"{PROG} {args.command}", [("model", settings.model_name), ("challenger", judged.challenger),
                                            ("champion before", judged.champion or "-"),
                                            ("decision", judged.decision), ("announced", judged.published or "-")])
    return 0


def status(settings: Settings, kafka_timeout: float = 5.0) -> dict[str, Any]:
    """Versions in the store, the current one, the last decisions and the latest control
    message; sources that cannot be reached are reported, not fatal."""
    from ja4_core.bundle import ModelStore
    from ja4_core.clickhouse_io import connect
    from trainer.announce import read_marker
    from trainer.publish import read_control_latest

    store = ModelStore(settings.model_store)
    model = settings.model_name
    current = store.current(model)
    marker = read_marker(store, model)
    versions = []
    for version in store.versions(model):
        entry: dict[str, Any] = {"version": version, "current": version == current,
                                 "announced": marker.get("version") == version}
        try:
            manifest, sha = read_manifest(store.bundle_dir(model, version))
            entry.update(created_at=manifest.get("created_at"), features=len(manifest["features"]),
                         xgb=manifest.get("xgb") is not None, manifest_sha256=sha,
                         val_anomaly_rate=(manifest.get("validation") or {}).get("val_anomaly_rate"))
        except Ja4StreamError as exc:
            entry["error"] = str(exc)
        versions.append(entry)
    out: dict[str, Any] = {"model": model, "store": str(store.model_dir(model)), "current": current,
                           "versions": versions, "published_marker": marker}
    try:
        with connect(settings.clickhouse_url) as ch:
            out["decisions"] = [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in d.items()
                                 if k not in ("drift", "metrics")} for d in ch.last_decisions(model, 10)]
    except Exception as exc:  # status reports what it can; ClickHouse may be down or empty
        out["decisions_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    try:
        latest = read_control_latest(settings, timeout=kafka_timeout)
        control = latest.get(model)
        out["control"] = (None if control is None else
                          {"partition": control.partition, "offset": control.offset, "error": control.error,
                           "message": control.message.__dict__ if control.message else None,
                           "refused": control.refused,
                           "challenger": control.challenger.__dict__ if control.challenger else None})
    except Exception as exc:  # Kafka may be down
        out["control_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return out


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    info = status(settings)
    if args.json:
        print(redact(json.dumps(info, indent=1, default=str)))
        return 0
    rows = [("model", info["model"]), ("store", info["store"]), ("current", info["current"] or "-")]
    for v in info["versions"]:
        flags = ", ".join(x for x, on in (("CURRENT", v["current"]), ("announced", v["announced"])) if on)
        detail = v.get("error") or f"created {v.get('created_at')}, {v.get('features')} features, xgb={v.get('xgb')}"
        rows.append((v["version"], f"{detail}{' [' + flags + ']' if flags else ''}"))
    for d in info.get("decisions", []):
        rows.append((f"decision {d['decided_at']}", f"{d['decision']} {d['version']}: {d['reason']}"))
    if "decisions_error" in info:
        rows.append(("decisions", f"unavailable ({info['decisions_error']})"))
    control = info.get("control")
    if "control_error" in info:
        rows.append(("control topic", f"unavailable ({info['control_error']})"))
    elif control is None:
        rows.append(("control topic", f"no message for {info['model']} on {settings.topic_control}"))
    elif control["message"]:
        m = control["message"]
        rows.append(("control topic", f"activate {m['version']} issued {m['issued_at']} by {m['issued_by']}"
                                      f"{' (rollback)' if m['rollback'] else ''} [offset {control['offset']}]"))
    else:
        rows.append(("control topic", f"no valid message; last refused: {control['error']}"))
    if control and control.get("challenger"):
        c = control["challenger"]
        rows.append(("challenger", f"shadow {c['version']} issued {c['issued_at']} by {c['issued_by']}"))
    if control and control.get("refused"):
        rows.append(("control refused", ", ".join(f"{n} {why}" for why, n in sorted(control["refused"].items()))))
    _print_table(f"{PROG} status", rows)
    return 0


def cmd_label(args: argparse.Namespace, settings: Settings) -> int:
    from ja4_core.clickhouse_io import connect
    from trainer.label_import import import_labels

    with connect(settings.clickhouse_url) as ch:
        ch.init_db(settings.features or DEFAULT_FEATURES)
        result = import_labels(ch, Path(args.file), default_source=args.source)
    print(f"imported {result.imported} labels ({result.bots} bot, {result.imported - result.bots} human) from "
          f"{args.file} into {ch.database}.soc_labels; {result.unscored} of them for windows never scored")
    return 0


# --- parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Retrain the ja4-stream models from ClickHouse "
                                     "and announce new versions on the control topic.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: list[argparse.ArgumentParser] = []

    def command(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help)
        cmd.set_defaults(func=func)
        commands.append(cmd)
        return cmd

    command("init-db", cmd_init_db, "create the ClickHouse schema (idempotent)")
    load = command("load", cmd_load, "fill the feature table from a file or the simulator")
    load.add_argument("--file", help="NDJSON (one record or array per line) or CSV with a header")
    load.add_argument("--format", choices=("ndjson", "csv"), help="file format (default: from the extension)")
    load.add_argument("--simulate", action="store_true", help="generate labelled traffic with the simulator")
    load.add_argument("--days", type=float, default=7.0, help="simulated days of history (default 7)")
    load.add_argument("--rate", type=int, default=300, help="simulated records per hour (default 300)")
    load.add_argument("--bot-share", type=float, default=0.1, help="share of bot records (default 0.1)")
    load.add_argument("--label-share", type=float, default=0.2,
                      help="share of records (bots and humans alike) given an analyst label (default 0.2)")
    load.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")
    lab = command("label", cmd_label, "import analyst labels (CSV or NDJSON) into soc_labels")
    lab.add_argument("--file", required=True, help="CSV with a header or NDJSON: window_start, src_ip, ja4, host, "
                                                   "label (bot|human), source, optional analyst, note")
    lab.add_argument("--source", default=None, help="source of the lines that name none (e.g. siem-export)")
    run = command("run-once", cmd_run_once, "decide, train, announce, report, exit")
    run.add_argument("--force", action="store_true", help="train even inside RETRAIN_INTERVAL_H without drift")
    command("loop", cmd_loop, "run on a schedule until SIGTERM/Ctrl-C")
    st = command("status", cmd_status, "versions, current, last decisions, control topic")
    st.add_argument("--json", action="store_true", help="print JSON")
    act = command("activate", cmd_activate, "operator rollback: make VERSION current and announce it")
    act.add_argument("version")
    for name, text in (("promote", "make the challenger (or VERSION) the champion: CURRENT, then activate"),
                       ("retire", "stop the challenger (or VERSION) shadowing on every replica")):
        verdict = command(name, cmd_champion, text)
        verdict.add_argument("version", nargs="?", help="default: the challenger shadowing now")
    for cmd in commands:  # last, so that --help lists each command's own options first
        add_setting_flags(cmd, process=TRAINER)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of ``stream-trainer``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        settings = load_settings(environ, args)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings)
    if args.command in ("run-once", "loop") and not settings.control_signing_key:
        from ja4_core.control import W_UNSIGNED

        log.warning(W_UNSIGNED)
    from clickhouse_connect.driver.exceptions import ClickHouseError
    from confluent_kafka import KafkaException

    started = time.monotonic()
    try:
        return args.func(args, settings)
    except ConfigError as exc:
        print(f"{PROG}: {redact(exc)}", file=sys.stderr)
        return 2
    except (Ja4StreamError, ClickHouseError, KafkaException, OSError) as exc:
        print(f"{PROG}: {args.command} failed: {redact(_one_line(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted after {time.monotonic() - started:.0f} s", file=sys.stderr)
        return 130


def run() -> None:
    """The process entry (the ``stream-trainer`` script, ``python -m trainer.cli``): :func:`main`
    with the collector in larger steps, and the heap frozen before the interpreter's teardown
    (:mod:`ja4_core.gc_steps`: a training run 39-74 s -> 23-39 s from start to exit here)."""
    run_process(main)


if __name__ == "__main__":
    run()
