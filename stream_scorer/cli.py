"""``stream-scorer``: the scorer's command line.

Subcommands: ``worker`` (a scoring replica), ``produce`` (send feature records from a file
or the simulator), ``status`` (which versions are active), ``sink`` (scores and labels into
ClickHouse), ``console`` (the analysts' review page) and ``demo`` (the whole loop on the
embedded default). Every setting is also a
flag; a bad value stops the command with one line naming the setting (exit code 2).
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import orjson

from ja4_core.errors import ConfigError, Ja4StreamError
from ja4_core.features import csv_cell
from ja4_core.gc_steps import run_process
from ja4_core.logs import redact
from ja4_core.settings import SINK, WORKER, Settings, add_setting_flags, load_settings, use_settings
from stream_scorer.faust_worker import setup_logging

log = logging.getLogger("stream_scorer")


# --- worker ----------------------------------------------------------------------------

def ensure_topics(settings: Settings, topics: Sequence[str]) -> None:
    """Create the given data topics when missing (partitions, replication and configs from
    :mod:`.topics`, the one helper every process uses)."""
    from ja4_core.kafka_admin import data_topic
    from ja4_core.kafka_admin import ensure_topics as create_missing

    create_missing(settings, [data_topic(settings, t) for t in topics])


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    use_settings(settings)
    setup_logging(settings)
    from stream_scorer.app import create_app, start_process
    from stream_scorer.faust_worker import run_worker

    start_process(settings)
    run_worker(create_app(settings), settings)
    return 0


# --- produce ---------------------------------------------------------------------------

def _read_file(path: Path) -> Iterator[dict[str, Any]]:
    """Records from NDJSON (one object or array per line) or CSV with a header, each cell read
    by :func:`ja4_core.features.csv_cell` (as ``stream-trainer load`` reads it; empty cells are
    left out, so a missing key field is missing)."""
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                yield {k: v for k, raw in row.items() if k is not None and (v := csv_cell(k, raw)) is not None}
        return
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise Ja4StreamError(f"{path}:{lineno}: not JSON ({exc}); use --raw to send lines unchanged "
                                     "(e.g. to replay a dead-letter dump)") from None
            if isinstance(doc, list):
                yield from doc
            else:
                yield doc


def _simulated(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    from ja4_dev.simulator import TrafficSimulator

    sim = TrafficSimulator(seed=args.seed, bot_share=args.bot_share)
    sent = 0
    while args.count is None or sent < args.count:
        chunk = 5000 if args.count is None else min(5000, args.count - sent)
        recs = sim.campaign(chunk) if args.campaign else sim.records(chunk)
        for rec in recs:
            if not args.with_truth:
                rec.pop("label", None)
                rec.pop("bot_kind", None)
            yield rec
        sent += chunk


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from confluent_kafka import Producer

    from ja4_core.kafka_security import confluent_config

    setup_logging(settings)
    ensure_topics(settings, [settings.topic_features])
    producer = Producer({**confluent_config(settings), "linger.ms": 5, "queue.buffering.max.messages": 1_000_000})
    if args.raw:
        return _produce_raw(settings, producer, Path(args.file))
    if args.file:
        source: Iterator[dict[str, Any]] = _read_file(Path(args.file))
    else:
        source = _simulated(args)
    started = time.monotonic()
    sent = messages = 0
    envelope: list[dict[str, Any]] = []

    def flush_envelope() -> None:
        nonlocal messages
        if envelope:
            key = str(envelope[0].get("src_ip", "")).encode()
            producer.produce(settings.topic_features, orjson.dumps(envelope if args.envelope > 1 else envelope[0]), key)
            messages += 1
            envelope.clear()
            producer.poll(0)

    for rec in source:
        envelope.append(rec)
        sent += 1
        if len(envelope) >= args.envelope:
            flush_envelope()
        if args.rate:
            ahead = sent / args.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        if args.count is not None and args.file and sent >= args.count:
            break
    flush_envelope()
    left = producer.flush(60)
    took = time.monotonic() - started
    print(f"produced {sent} records in {messages} messages to {settings.topic_features} "
          f"in {took:.1f}s ({sent / max(took, 1e-9):.0f} records/s){'; UNDELIVERED: ' + str(left) if left else ''}")
    return 1 if left else 0


def _produce_raw(settings: Settings, producer: Any, path: Path) -> int:
    """Send each non-empty line of a file unchanged (one message per line): replays a DLQ dump
    after a fix, whatever the lines hold; the worker dead-letters what is still bad."""
    sent = 0
    with open(path, "rb") as fh:
        for line in fh:
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            producer.produce(settings.topic_features, line)
            sent += 1
            producer.poll(0)
    left = producer.flush(60)
    print(f"produced {sent} raw messages to {settings.topic_features}{'; UNDELIVERED: ' + str(left) if left else ''}")
    return 1 if left else 0


# --- status ----------------------------------------------------------------------------

def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    import json
    import urllib.request

    from ja4_core.control_log import read_control

    ledger = read_control(settings)
    print(f"control topic {settings.topic_control}:")
    if not ledger.latest:
        print("  (no valid activate messages)")
    for model, chosen in sorted(ledger.latest.items()):
        msg = chosen.message
        print(f"  {model}: version {msg.version} issued {msg.issued_at} by {msg.issued_by}"
              f"{' (rollback)' if msg.rollback else ''} [offset {chosen.record.offset}]")
        live = ledger.live_challenger(model)
        if live is not None:
            print(f"  {model}: challenger {live.message.version} shadowing since {live.message.issued_at} "
                  f"by {live.message.issued_by} [offset {live.record.offset}]")
    if ledger.refused:
        print(f"  refused messages: {', '.join(f'{n} {reason}' for reason, n in sorted(ledger.refused.items()))}")
    rc = 0
    for url in args.replica or []:
        target = url.rstrip("/") + "/model"
        try:
            with urllib.request.urlopen(target, timeout=3) as resp:
                info = json.loads(resp.read())
            active = info.get("active") or {}
            print(f"replica {url}: {active.get('model_name')} {active.get('model_version')} "
                  f"loaded {active.get('loaded_at')} partitions {info.get('partitions')}")
            challenger = info.get("challenger") or {}
            shadowing = challenger.get("active") or {}
            dropped = challenger.get("dropped") or {}
            if shadowing:
                print(f"  challenger {shadowing.get('model_version')} loaded {shadowing.get('loaded_at')}")
            elif challenger.get("announced"):
                print(f"  challenger {challenger.get('announced')} not loaded"
                      f"{' (' + str(dropped.get('reason')) + ')' if dropped else ''}")
        except Exception as exc:
            print(f"replica {url}: unreachable ({redact(exc)})")
            rc = 1
    return rc


# --- parser ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stream-scorer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("worker", help="run a scoring replica (joins the SCORER_APP_ID consumer group)")
    add_setting_flags(p, process=WORKER)

    p = sub.add_parser("produce", help="send feature records to the features topic")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--file", help="NDJSON or CSV file of feature records")
    src.add_argument("--simulate", action="store_true", help="use the built-in traffic simulator (default)")
    p.add_argument("--count", type=int, default=None, help="records to send (simulator default: 10000)")
    p.add_argument("--rate", type=float, default=None, help="records per second (default: as fast as possible)")
    p.add_argument("--bot-share", type=float, default=0.1, help="simulator: share of bot records")
    p.add_argument("--campaign", action="store_true", help="simulator: a bot campaign impersonating a browser")
    p.add_argument("--envelope", type=int, default=1, help="records per message (1 = one object per message)")
    p.add_argument("--seed", type=int, default=0, help="simulator seed")
    p.add_argument("--with-truth", action="store_true", help="simulator: keep the label/bot_kind fields")
    p.add_argument("--raw", action="store_true", help="with --file: send each line unchanged (DLQ replay)")
    add_setting_flags(p, process=WORKER)  # a producer of the worker's input topic

    p = sub.add_parser("status", help="print the active model versions")
    p.add_argument("--replica", action="append", help="a replica's web URL (http://host:port); repeatable")
    add_setting_flags(p, process=WORKER)  # reads the control topic as the worker does

    p = sub.add_parser("sink", help="insert score records into ClickHouse ml_all_scores")
    add_setting_flags(p, process=SINK)

    p = sub.add_parser("console", help="serve the analysts' review page (loopback; elsewhere CONSOLE_TOKEN is required)")
    add_setting_flags(p, process=SINK)  # the review side of the sink: it reads the scores the sink stores

    p = sub.add_parser("demo", help="run the whole loop on a local broker (Apache Kafka, else the embedded Tansu)")
    p.add_argument("--duration", type=float, default=120.0, help="seconds of live traffic (default 120)")
    p.add_argument("--rate", type=float, default=500.0, help="records per second of live traffic")
    p.add_argument("--replicas", type=int, default=2, help="scorer replicas")
    p.add_argument("--history-rate", type=int, default=300, help="simulated history records per hour (7 days)")
    p.add_argument("--var", default="./var", help="state directory (reused between runs)")
    p.add_argument("--no-live", action="store_true", help="plain progress lines instead of the live view")
    p.add_argument("--broker", choices=["tansu", "kafka", "auto"], default="auto",
                   help="auto (default): Apache Kafka where java and mvn are installed, else tansu; "
                        "kafka: Apache Kafka 4 (jars from Maven Central, cached); tansu: the embedded "
                        "broker (no Java needed, but kcat/librdkafka 2.0 cannot talk to it)")
    add_setting_flags(p)  # the demo runs every process
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args=args)
        if args.command == "produce":
            if not 1 <= args.envelope <= 100_000:
                raise ConfigError("--envelope: must be between 1 and 100000")
            if args.raw and not args.file:
                raise ConfigError("--raw: needs --file")
            if args.file is None and args.count is None:
                args.count = 10_000
        if args.command == "worker":
            return cmd_worker(settings, args)
        if args.command == "produce":
            return cmd_produce(settings, args)
        if args.command == "status":
            return cmd_status(settings, args)
        if args.command == "sink":
            from stream_scorer.sink import run_sink

            return run_sink(settings)
        if args.command == "console":
            from stream_scorer.console import run_console

            setup_logging(settings)
            return run_console(settings)
        if args.command == "demo":
            from ja4_dev.demo import run_demo

            return run_demo(settings, args)
    except ConfigError as exc:
        print(f"stream-scorer: configuration error: {redact(exc)}", file=sys.stderr)
        return 2
    except Ja4StreamError as exc:
        print(f"stream-scorer: {redact(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def run() -> None:
    """The process entry (the ``stream-scorer`` script, ``python -m stream_scorer.cli``): :func:`main`
    with the collector in larger steps, and the heap frozen before the interpreter's teardown
    (:mod:`ja4_core.gc_steps`; a worker also freezes what its start-up built)."""
    run_process(main)


if __name__ == "__main__":
    run()
