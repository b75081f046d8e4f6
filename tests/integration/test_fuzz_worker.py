"""Hostile and broken input on the feature topic, through one real worker process (issue 7).

Property: for every message, the worker's outputs are exactly what the pure parser predicts.
``parse_batch([value], features)`` says how many records a message holds (each gets one
score record) and how many rejects (each gets one DLQ entry, with a one-line ``error``
header); an empty array is one reject. Every message is produced with a key of its own, and
score and DLQ records keep the input's key, so the outputs of each message are counted by key.

Hypothesis draws the messages: random bytes, invalid UTF-8, deeply nested JSON (around
orjson's limits: it reads 1024 levels, writes 254; up to 3000), huge integers (> 2**64) and
floats (±1e308), literal ``NaN``/``Infinity``/``1e400`` tokens (which orjson refuses and the
parser's json fallback reads), non-finite-looking strings, strings where numbers
belong, missing and extra keys, wrong key types, empty and very large envelopes (2000
records), tombstones, and valid records with random feature values. One worker (started once
for the module) takes them all; at the end it must still be alive and healthy, have written
no traceback, have produced nothing more than predicted, and stop cleanly on SIGTERM.

A 10 MB message: confluent-kafka refuses it by default (``message.max.bytes`` = 1 MB, a
local ``MSG_SIZE_TOO_LARGE``); with ``message.max.bytes`` raised on the producer it arrives
(Tansu has no size cap; on Apache Kafka the fuzz topics are created with a raised
``max.message.bytes``, as an operator who accepts such input would), and the worker must
score it (or dead-letter it) and stay healthy.

The ``xfail(strict=True)`` tests at the end pin bugs this campaign found (see their
reasons); they run on a second worker, because they crash its agent or log tracebacks.
Until they are fixed, the fuzz strategies keep messages and context fields under the worker
producer's 1 MB request size, and examples whose records the parser itself cannot turn into
a score record (lone surrogates, integers beyond 64 bits taken by the json fallback) are
generated but skipped (``KnownBug``).
"""

from __future__ import annotations

import itertools
import json
import random
import sys
import time
import uuid
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from hypothesis import HealthCheck, Phase, example, given, reject, settings
from hypothesis import strategies as st

from ja4_core.bundle import ModelStore
from ja4_core.features import CONTEXT_FIELDS, DEFAULT_FEATURES, KEY_FIELDS
from stream_scorer.parsing import parse_batch
from tests.helpers import Worker, headers_of, quick_bundle, topic_env

pytestmark = pytest.mark.slow

PARTITIONS = 4
MB = 1024 * 1024
#: How long one example may take to come back (normally well under a second).
ROUND_TIMEOUT_S = 30.0
SETTINGS = settings(max_examples=45, deadline=None, database=None,
                    # No shrinking: each shrink step is a round trip through the broker, and a
                    # failure prints the drawn messages anyway.
                    phases=(Phase.explicit, Phase.generate),
                    suppress_health_check=list(HealthCheck))


# --- reading the output topics without a consumer group (no join delay) ---------------------

class TopicReader:
    """Every message of a topic by Kafka key, read with ``assign`` from the beginning."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fuzz-reader-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False, "fetch.message.max.bytes": 16 * MB})
        self.assigned: set[int] = set()
        self.by_key: dict[bytes | None, list[Any]] = defaultdict(list)
        self.count = 0
        self._refreshed = 0.0

    def _refresh(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self._refreshed = time.monotonic()
        meta = self.consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)
        new = [p for p in (meta.partitions if meta and meta.error is None else {}) if p not in self.assigned]
        if new:
            self.consumer.incremental_assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in new])
            self.assigned.update(new)

    def poll(self, seconds: float = 0.1) -> None:
        if time.monotonic() - self._refreshed > 2.0:
            self._refresh()
        for msg in self.consumer.consume(10_000, seconds):
            if msg.error() is None:
                self.by_key[msg.key()].append(msg)
                self.count += 1

    def close(self) -> None:
        self.consumer.close()


class KnownBug(Exception):
    """The parser's own output for this message triggers a bug pinned by an xfail test below."""


def _key_json(rec: dict[str, Any]) -> str:
    return json.dumps([rec[k] for k in KEY_FIELDS])


@dataclass
class Expected:
    """What one message must produce, from the pure parser."""

    records: list[str]  # each scored record's key fields, as JSON
    rejects: list[tuple[bytes, str]]  # (DLQ value, error header)

    @classmethod
    def of(cls, value: bytes | None) -> "Expected":
        # The parser's fallback (json.loads) gives up at the interpreter's recursion limit:
        # predict with the worker's (Python's default), not the one hypothesis raises.
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(1000)
        try:
            parsed = parse_batch([value], DEFAULT_FEATURES)
        except OverflowError as exc:  # see test_a_huge_integer_..._does_not_poison_the_batch
            raise KnownBug(f"parse_batch raised {exc!r}") from None
        finally:
            sys.setrecursionlimit(limit)
        for rec in parsed.records:
            try:
                orjson.dumps(rec)
            except TypeError as exc:  # see the lone-surrogate and huge-integer xfail tests
                raise KnownBug(f"the score record cannot be serialised: {exc}") from None
        return cls([_key_json(r) for r in parsed.records], [(r.value, r.reason) for r in parsed.rejects])


class Rig:
    """One worker, its topics, a producer and readers of its outputs."""

    def __init__(self, bootstrap: str, env: dict[str, str], worker: Worker, version: str, producer: Any) -> None:
        self.bootstrap, self.env, self.worker, self.version, self.producer = bootstrap, env, worker, version, producer
        self.scores = TopicReader(bootstrap, env["TOPIC_SCORES"])
        self.dlq = TopicReader(bootstrap, env["TOPIC_DLQ"])
        self.expected: dict[bytes, Expected] = {}
        self.prefix = uuid.uuid4().hex[:8]
        self.counter = itertools.count()

    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"Rig(topic={self.topic!r}, messages={len(self.expected)})"

    @property
    def topic(self) -> str:
        return self.env["TOPIC_FEATURES"]

    def send(self, messages: list[bytes | None], partition: int | None = None, predict: bool = True) -> list[bytes]:
        """Produce ``messages`` (one fresh key each) and wait for the broker's acknowledgement;
        what each must produce is the parser's prediction (unless ``predict`` is false)."""
        keys = [f"{self.prefix}-{next(self.counter)}".encode() for _ in messages]
        errors: list[Any] = []
        for key, value in zip(keys, messages):
            if predict:
                self.expected[key] = Expected.of(value)
            kwargs = {} if partition is None else {"partition": partition}
            self.producer.produce(self.topic, value, key, on_delivery=lambda err, msg: err and errors.append(err),
                                  **kwargs)
        assert self.producer.flush(30) == 0 and not errors, errors
        return keys

    def observed(self, key: bytes) -> tuple[int, int]:
        return len(self.scores.by_key.get(key, ())), len(self.dlq.by_key.get(key, ()))

    def done(self, keys: list[bytes]) -> bool:
        return all(self.observed(k) >= (len(self.expected[k].records), len(self.expected[k].rejects)) for k in keys)

    def wait(self, keys: list[bytes], timeout: float = ROUND_TIMEOUT_S, give_up=lambda: False) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.done(keys) and not give_up():
            assert self.worker.proc.poll() is None, f"worker died:\n{self.worker.log()[-3000:]}"
            self.scores.poll(0.05)
            self.dlq.poll(0.05)

    def check(self, key: bytes) -> None:
        """The outputs of one message are exactly what the parser predicts."""
        exp = self.expected[key]
        scores, dlq = self.scores.by_key.get(key, []), self.dlq.by_key.get(key, [])
        assert (len(scores), len(dlq)) == (len(exp.records), len(exp.rejects)), (
            f"message {key!r}: {len(scores)} scores + {len(dlq)} DLQ entries, expected "
            f"{len(exp.records)} + {len(exp.rejects)}; DLQ errors: {[headers_of(m).get('error') for m in dlq][:5]}")
        docs = [orjson.loads(m.value()) for m in scores]
        assert Counter(_key_json(d) for d in docs) == Counter(exp.records)
        for msg, doc in zip(scores, docs):
            assert headers_of(msg)["model-version"] == self.version == doc["model_version"]
            for name in ("anomaly_score", "eif_score"):
                assert isinstance(doc[name], float) and 0.0 <= doc[name] <= 1.0, (name, doc[name])
            assert doc["threat_level"] in {"NORMAL", "LOW", "MEDIUM", "HIGH", "CRITICAL", "KNOWN_BOT",
                                           "LEGITIMATE_BROWSER"}
        got = []
        for msg in dlq:
            h = headers_of(msg)
            assert h["error"] and "\n" not in h["error"], h
            assert h["source-topic"] == self.topic and int(h["source-offset"]) >= 0, h
            assert 0 <= int(h["source-partition"]) < PARTITIONS, h
            got.append((msg.value() or b"", h["error"]))
        assert Counter(got) == Counter(exp.rejects), "DLQ values (original bytes) and reasons as the parser says"

    def round(self, messages: list[bytes | None]) -> None:
        """One hypothesis example: send, wait, check every message."""
        try:
            for value in messages:
                Expected.of(value)
        except KnownBug:
            reject()  # generated, but pinned by an xfail test until fixed
        keys = self.send(messages)
        self.wait(keys)
        for key in keys:
            self.check(key)


#: ``max.message.bytes`` of the fuzz topics: the 10 MB messages below must reach the worker.
#: Apache Kafka caps a record batch at ~1 MB by default (``message.max.bytes`` 1048588, a
#: producer gets MSG_SIZE_TOO_LARGE); an operator who accepts bigger input raises the cap on
#: the topic, as here (Tansu has no cap and ignores it). The worker's own outputs stay under
#: its producer's 1 MB request size (``agents.fit_outputs``), so they fit a default topic.
TOPIC_MAX_MESSAGE_BYTES = str(16 * MB)


def _create_topics(bootstrap: str, env: dict[str, str]) -> None:
    """The output topics as a deployment would have them (the readers assign their partitions)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [env["TOPIC_FEATURES"], env["TOPIC_SCORES"], env["TOPIC_DLQ"]]
    config = {"max.message.bytes": TOPIC_MAX_MESSAGE_BYTES}
    for fut in admin.create_topics([NewTopic(n, PARTITIONS, 1, config=config) for n in names]).values():
        fut.result(10)


def _start_rig(bootstrap: str, base: Path) -> Rig:
    from confluent_kafka import Producer

    store = ModelStore(base / "models")
    info = quick_bundle(store)
    env = topic_env(bootstrap, uuid.uuid4().hex[:8], store.root, SCORER_BATCH_WAIT_MS="20",
                    TOPIC_PARTITIONS=str(PARTITIONS))
    _create_topics(bootstrap, env)
    worker = Worker(env, base).start()
    worker.wait_ready()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "message.max.bytes": 16 * MB})
    return Rig(bootstrap, env, worker, info.version, producer)


@contextmanager
def _running_rig(bootstrap: str, base: Path, stop_timeout: float = 20.0) -> Iterator[Rig]:
    r = _start_rig(bootstrap, base)
    try:
        yield r
    finally:
        r.worker.stop(timeout=stop_timeout)
        r.scores.close()
        r.dlq.close()


@pytest.fixture(scope="module")
def rig(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with _running_rig(kafka_bootstrap, tmp_path_factory.mktemp("fuzz")) as r:
        yield r


# --- strategies ----------------------------------------------------------------------------

class Raw:
    """A literal JSON token spliced into the text (``NaN``, ``1e400``, a 400-digit integer ...)."""

    def __init__(self, token: str) -> None:
        self.token = token


def dump(obj: Any) -> bytes:
    """JSON text for ``obj`` (Python's encoder: big integers stay exact), with Raw tokens."""
    raws: list[str] = []

    def default(o: Any) -> Any:
        if isinstance(o, Raw):
            raws.append(o.token)
            return f"@@raw{len(raws) - 1}@@"
        raise TypeError(type(o).__name__)

    text = json.dumps(obj, ensure_ascii=False, allow_nan=True, default=default)
    for i, token in enumerate(raws):
        text = text.replace(f'"@@raw{i}@@"', token, 1)
    return text.encode("utf-8")


HUGE_INTS = st.one_of(st.integers(min_value=2**64, max_value=2**400),
                      st.integers(min_value=-(2**400), max_value=-(2**64)))
EXTREME_FLOATS = st.sampled_from([1e308, -1e308, 1.7976931348623157e308, 5e-324, -0.0, 2.2250738585072014e-308])
NUMBERS = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(), HUGE_INTS, EXTREME_FLOATS)
NON_FINITE_LOOKING = st.sampled_from(["NaN", "nan", "Infinity", "-Infinity", "inf", "1e999", "-1e999", "0x10", "1,5",
                                      ""])
#: Python's encoder writes these as the NaN / Infinity / -Infinity literals, which orjson refuses.
NON_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf")])
RAW_TOKENS = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400, "01", "+1",
                              ".5", "0x1F", "1e", "--1", "true", "null"]).map(Raw)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=20))
#: Shallow JSON values (deep nesting has a strategy of its own, :func:`deep`).
JSON_VALUES = st.recursive(SCALARS, lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=8), ch,
                                                                                         max_size=4),
                           max_leaves=12)
FEATURE_VALUES = st.one_of(NUMBERS, NUMBERS, NON_FINITE_LOOKING, st.text(max_size=12), st.none(), st.booleans(),
                           JSON_VALUES, NON_FINITE, RAW_TOKENS)
KEY_STRINGS = st.text(min_size=1, max_size=24)
WINDOW_STARTS = st.one_of(st.datetimes().map(lambda d: d.isoformat()), st.integers(), HUGE_INTS, EXTREME_FLOATS,
                          st.floats(allow_nan=False, allow_infinity=False), KEY_STRINGS)
#: What the contract accepts as window_start: ISO-8601 or epoch seconds from 1970 up to 2200.
VALID_WINDOW_STARTS = st.one_of(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2199, 12, 30)).map(lambda d: d.isoformat()),
    st.integers(0, 7_258_118_399), st.floats(0, 7_258_118_399))
BAD_KEY_VALUES = st.one_of(st.just(""), st.none(), st.booleans(), st.lists(st.integers(), max_size=2),
                           st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.floats(), st.integers())


@st.composite
def records(draw: st.DrawFn, valid: bool = False, feature_values: st.SearchStrategy = FEATURE_VALUES) -> dict:
    """One record: key fields (sometimes missing or of a wrong type), some features, context
    fields and extra keys."""
    rec: dict[str, Any] = {}
    for name in KEY_FIELDS:
        fate = "ok" if valid else draw(st.sampled_from(["ok"] * 8 + ["missing", "bad"]))
        if fate == "ok":
            rec[name] = draw((VALID_WINDOW_STARTS if valid else WINDOW_STARTS) if name == "window_start" else KEY_STRINGS)
        elif fate == "bad":
            rec[name] = draw(BAD_KEY_VALUES)
    for name in draw(st.lists(st.sampled_from(DEFAULT_FEATURES), unique=True, max_size=len(DEFAULT_FEATURES))):
        rec[name] = draw(feature_values)
    for name in draw(st.lists(st.sampled_from(CONTEXT_FIELDS), unique=True)):
        rec[name] = draw(JSON_VALUES)
    if not valid:
        for name, value in draw(st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=3)).items():
            rec.setdefault(name, value)
    return rec


def invalid_utf8(rec: dict, bad: bytes) -> bytes:
    """A record whose ``src_ip`` string holds bytes that are not UTF-8."""
    return dump({**rec, "src_ip": "@@bad@@"}).replace(b"@@bad@@", bad)


def deep(depth: int, kind: str) -> bytes:
    """JSON nested ``depth`` levels: the whole message, an extra field of a record, an
    envelope item, a field of a rejected envelope item, or a context field."""
    nested = b"[" * depth + b"]" * depth
    rec = b'{"window_start":1,"src_ip":"10.0.0.1","ja4":"t13d","host":"h"'
    if kind == "arrays":
        return nested
    if kind == "objects":
        return b'{"a":' * depth + b"1" + b"}" * depth
    if kind == "extra":
        return rec + b',"x":' + nested + b"}"
    if kind == "item":
        return b"[" + rec + b"}," + nested + b"]"
    if kind == "rejected item":
        return b"[" + rec + b'},{"src_ip":"10.0.0.2","x":' + nested + b"}]"
    assert kind == "context"
    return rec + b',"asn_number":' + nested + b"}"


DEEP_KINDS = ["arrays", "objects", "extra", "item", "rejected item", "context"]


def big_envelope(n: int, seed: int, bad_every: int) -> bytes:
    """An envelope of ``n`` small records; every ``bad_every``-th item is broken."""
    rng = random.Random(seed)
    items: list[Any] = []
    for i in range(n):
        rec = {"window_start": 1_780_000_000 + i, "src_ip": f"10.{i >> 8 & 255}.{i & 255}.{seed % 250}",
               "ja4": "t13d1516h2_8daaf6152771_e5627efa2ab1", "host": "example.test",
               "hits": rng.randint(0, 10**6), "post_ratio": rng.random(), "header_count": rng.choice([None, 12, "x"])}
        if bad_every and i % bad_every == 0:
            items.append(rng.choice([{k: v for k, v in rec.items() if k != "ja4"}, 42, "str", None, [1]]))
        else:
            items.append(rec)
    return dump(items)


MESSAGES = st.one_of(
    st.binary(max_size=300),  # random bytes
    st.builds(invalid_utf8, records(valid=True),
              st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xe2\x82"])),
    # around orjson's limits: it writes 254 levels, reads 1024
    st.builds(deep, st.one_of(st.integers(min_value=200, max_value=1100), st.integers(min_value=1025, max_value=3000)),
              st.sampled_from(DEEP_KINDS)),
    records().map(dump),  # one object
    st.lists(st.one_of(records(), records(valid=True), JSON_VALUES), max_size=8).map(dump),  # envelopes, [] too
    st.builds(big_envelope, st.integers(min_value=1000, max_value=2500), st.integers(0, 2**32 - 1),
              st.sampled_from([0, 7, 97])),
    st.sampled_from([b"", b"[]", b"{}", b"null", b"0", b'"str"', b"[[]]", b"[{}]", b" ", b"[1,2,3]", b"true",
                     b'{"src_ip": "\\ud800"}', b"\xef\xbb\xbf{}"]),
    st.none(),  # a tombstone
)

VALID = records(valid=True, feature_values=st.one_of(NUMBERS, st.none(), st.booleans(), NON_FINITE_LOOKING))

REC = {"window_start": "2026-06-01T10:00:00Z", "src_ip": "10.1.2.3", "ja4": "t13d1516h2_8daaf6152771_e5627efa2ab1",
       "host": "example.test"}


# --- the properties -------------------------------------------------------------------------

@SETTINGS
@given(messages=st.lists(MESSAGES, min_size=1, max_size=5))
@example(messages=[deep(2000, kind) for kind in DEEP_KINDS])
@example(messages=[deep(300, kind) for kind in DEEP_KINDS])
@example(messages=[big_envelope(2000, 1, 0), big_envelope(2000, 2, 7), b"[]"])
@example(messages=[dump({**REC, "hits": 2**64 + 1, "post_ratio": -(2**70), "header_count": 1e308,
                          "hit_velocity": -1e308, "asset_ratio": Raw("1" + "0" * 400)}),
                   dump({**REC, "hits": 2**64 + 1, "post_ratio": -(2**70), "header_count": 1e308,
                         "hit_velocity": -1e308}),
                   dump({**REC, "hits": "NaN", "post_ratio": "Infinity", "header_count": "12", "burst_ratio": None}),
                   dump({**REC, "hits": float("nan")}), dump({**REC, "hits": Raw("1e400")})])
@example(messages=[dump({k: v for k, v in REC.items() if k != "host"}), dump({**REC, "src_ip": 7}),
                   dump({**REC, "window_start": True}), dump({**REC, "extra": {"a": [1, 2]}, "bot_name": "curl"}),
                   dump([REC, {"src_ip": "x"}, 3, [], None, "s"]), None, b"\xff\xfe\x00"])
def test_every_message_is_scored_or_dead_lettered_as_the_parser_predicts(rig: Rig, messages: list) -> None:
    rig.round(messages)


@SETTINGS
@given(batch=st.lists(VALID, min_size=1, max_size=30), envelope=st.booleans())
def test_valid_records_with_random_feature_values_are_all_scored(rig: Rig, batch: list[dict], envelope: bool) -> None:
    messages = [dump(batch)] if envelope else [dump(r) for r in batch]
    assert all(not Expected.of(m).rejects for m in messages)
    rig.round(messages)


def test_a_10mb_message(rig: Rig) -> None:
    """confluent-kafka refuses 10 MB by default, with a clear local error. With
    ``message.max.bytes`` raised on the producer, the broker takes it (Tansu has no size cap;
    Kafka's topics here have ``max.message.bytes`` raised) and the worker scores it (the
    padding is an unused field) and stays healthy; a broker that still caps it refuses it with
    MSG_SIZE_TOO_LARGE, and the worker is untouched."""
    from confluent_kafka import KafkaError, KafkaException, Producer

    value = dump({**REC, "hits": 12, "padding": "x" * (10 * MB)})
    assert len(value) > 10 * MB
    default = Producer({"bootstrap.servers": rig.bootstrap})
    with pytest.raises(KafkaException) as refused:
        default.produce(rig.topic, value, b"refused")
    assert refused.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    assert default.flush(5) == 0

    key = f"{rig.prefix}-10mb".encode()
    delivery: list[Any] = []
    rig.producer.produce(rig.topic, value, key, on_delivery=lambda err, msg: delivery.append(err))
    assert rig.producer.flush(60) == 0 and len(delivery) == 1
    if delivery[0] is not None:  # a broker with a size cap
        assert delivery[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, delivery[0]
    else:
        rig.expected[key] = Expected.of(value)
        rig.wait([key], timeout=60)
        rig.check(key)
        assert rig.observed(key) == (1, 0)
    assert rig.worker.proc.poll() is None and rig.worker.get("/health")[0] == 200


def test_nesting_orjson_reads_but_cannot_write_does_not_poison_the_batch(rig: Rig) -> None:
    """orjson reads 1024 levels but writes only 254: a 300-level envelope item, field of a
    rejected item, or context field must not make the batch fail (every message of it would
    be dead-lettered as "scoring failed"). Found by this campaign, fixed in ``parsing.py``
    (``_dumps_item``; context fields pass through only as scalars)."""
    good = dump(REC)
    messages = [good, deep(300, "item"), deep(300, "rejected item"), deep(300, "context"), good]
    keys = rig.send(messages, partition=0)  # one partition: one batch
    rig.wait(keys)
    for key in keys:
        rig.check(key)
    assert [rig.observed(k) for k in keys] == [(1, 0), (1, 1), (1, 1), (1, 0), (1, 0)]
    context_score = orjson.loads(rig.scores.by_key[keys[3]][0].value())
    assert "asn_number" not in context_score


def test_after_all_that_the_worker_is_healthy_and_produced_nothing_extra(rig: Rig) -> None:
    """Runs last: every message's outputs are still exactly as predicted (nothing late or
    extra arrived), the worker is alive, healthy, wrote no traceback, and stops cleanly."""
    assert rig.expected, "the fuzz tests ran first"
    rig.wait(list(rig.expected), timeout=60)
    end = time.monotonic() + 3.0
    while time.monotonic() < end:  # anything late or extra
        rig.scores.poll(0.2)
        rig.dlq.poll(0.2)
    for key in rig.expected:
        rig.check(key)
    unexpected = {k for k in itertools.chain(rig.scores.by_key, rig.dlq.by_key) if k not in rig.expected}
    assert not unexpected, f"outputs for keys never sent: {sorted(unexpected)[:5]}"
    assert rig.worker.proc.poll() is None
    status, body = rig.worker.get("/health")
    assert status == 200 and body["model_active"], body
    assert "Traceback" not in rig.worker.log(), rig.worker.log()[-5000:]
    sent = len(rig.expected)
    in_records = sum(len(e.records) + len(e.rejects) for e in rig.expected.values())
    print(f"fuzz: {sent} messages, {in_records} records/rejects, {rig.scores.count} scores, {rig.dlq.count} DLQ")
    assert rig.scores.count + rig.dlq.count == in_records
    assert rig.worker.stop() == 0, rig.worker.log()[-3000:]


# --- bugs found (on a worker of their own: they crash its agent or log tracebacks) ---------

@pytest.fixture(scope="module")
def bug_rig(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    # a short stop: after an agent crash its unacked batch blocks a clean stop
    with _running_rig(kafka_bootstrap, tmp_path_factory.mktemp("fuzz-bugs"), stop_timeout=5) as r:
        yield r


def _crashes(rig: Rig) -> int:
    return rig.worker.log().count("Crashed reason=")


def _send_and_wait(rig: Rig, messages: list[bytes], partition: int) -> list[bytes]:
    """Send ``messages`` to one partition (so that they are one batch) and wait until each
    has an output (a score or a DLQ entry), or two seconds after the agent crashed."""
    before = _crashes(rig)
    crashed_at: list[float] = []
    keys = rig.send(messages, partition=partition, predict=False)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(sum(rig.observed(k)) for k in keys):
        if not crashed_at and _crashes(rig) > before:
            crashed_at.append(time.monotonic())
        if crashed_at and time.monotonic() - crashed_at[0] > 2.0:
            break
        rig.scores.poll(0.05)
        rig.dlq.poll(0.05)
    rig.scores.poll(0.5)  # anything more (a record must not get both, or two)
    rig.dlq.poll(0.5)
    return keys


def _errors(rig: Rig, key: bytes) -> list[str]:
    return [headers_of(m)["error"] for m in rig.dlq.by_key.get(key, [])]


_LENIENT = "parsing._lenient_loads (the json.loads fallback for what orjson refuses) "


def test_a_lone_surrogate_in_a_key_field_does_not_poison_the_batch(bug_rig: Rig) -> None:
    good = dump(REC)
    encoded = dump({**REC, "src_ip": "@@s@@"}).replace(b"@@s@@", b"\xed\xa0\x80")
    escaped = dump({**REC, "src_ip": "@@s@@"}).replace(b"@@s@@", b"\\ud800")
    keys = _send_and_wait(bug_rig, [good, encoded, escaped, good], partition=0)
    assert [bug_rig.observed(k) for k in (keys[0], keys[3])] == [(1, 0), (1, 0)], \
        f"the good messages of the batch are scored, not dead-lettered: {_errors(bug_rig, keys[0])}"
    for key in keys[1:3]:
        assert sum(bug_rig.observed(key)) == 1 and not any("scoring failed" in e for e in _errors(bug_rig, key))


def test_a_huge_integer_next_to_a_nan_literal_does_not_poison_the_batch(bug_rig: Rig) -> None:
    good = dump(REC)
    nan = float("nan")  # written as the NaN literal: orjson refuses the message, the fallback reads it
    hostile = [dump({**REC, "window_start": 2**70, "hits": nan}),
               dump({**REC, "window_start": Raw("1" + "0" * 400), "hits": nan}),
               dump({**REC, "asn_number": 2**70, "hits": nan})]
    keys = _send_and_wait(bug_rig, [good, *hostile, good], partition=1)
    assert [bug_rig.observed(k) for k in (keys[0], keys[-1])] == [(1, 0), (1, 0)], \
        f"the good messages of the batch are scored, not dead-lettered: {_errors(bug_rig, keys[0])}"
    for key in keys[1:-1]:
        assert sum(bug_rig.observed(key)) == 1 and not any("scoring failed" in e for e in _errors(bug_rig, key))


def test_a_10mb_message_that_is_not_json_is_dead_lettered(bug_rig: Rig) -> None:
    value = b"\xff" * (10 * MB)
    crashes = _crashes(bug_rig)
    keys = _send_and_wait(bug_rig, [value], partition=2)
    assert bug_rig.worker.proc.poll() is None and bug_rig.worker.get("/health")[0] == 200
    dlq = bug_rig.dlq.by_key.get(keys[0], [])
    assert len(dlq) == 1 and headers_of(dlq[0])["error"], "dead-lettered with a reason"
    assert value.startswith(dlq[0].value() or b""), "the original bytes (or a marked prefix of them)"
    assert _crashes(bug_rig) == crashes, "the scoring agent did not crash"


def test_a_huge_echoed_field_is_scored_or_dead_lettered(bug_rig: Rig) -> None:
    crashes = _crashes(bug_rig)
    keys = _send_and_wait(bug_rig, [dump({**REC, "bot_name": "b" * (2 * MB)}), dump({**REC, "host": "h" * (2 * MB)})],
                          partition=3)
    assert bug_rig.worker.proc.poll() is None and bug_rig.worker.get("/health")[0] == 200
    assert [sum(bug_rig.observed(k)) for k in keys] == [1, 1], "scored (field truncated) or dead-lettered with a reason"
    assert _crashes(bug_rig) == crashes, "the scoring agent did not crash"
