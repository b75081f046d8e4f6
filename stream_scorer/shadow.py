"""The challenger of a replica: loaded beside the champion, scores every batch in shadow.

A ``shadow`` control message (see :mod:`ja4_core.control`) names a *challenger*: every
replica loads it exactly as it loads the champion (:func:`.model_holder.load_verified`:
the uri must name ``<store>/<model>/<version>``, every checksum is verified, the compiled
evaluators are checked, the manifest's rows are smoke-scored), in a thread, so the champion
keeps scoring meanwhile. A bundle that fails any step is refused and reported (``/model``,
``ja4_shadow_dropped_total{reason}``) and the champion serves on, alone.

Per batch the agent calls the challenger once (:func:`score_beside`, after the champion, on
the champion's parsed matrix when both models use the same features, else on its own parse
of the same messages) and turns its scores into records for
``TOPIC_SHADOW_SCORES`` (:func:`shadow_outputs`): same key as the champion's score record,
a ``model-version`` header naming the challenger, and the champion's version, score and
level beside the challenger's, so the trainer judges both on exactly the same records. The
champion's score records are built from the champion's numbers alone and never wait for
the shadow ones: a challenger that raises while scoring is dropped (``scoring``), one that
takes longer than ``SHADOW_SCORE_TIMEOUT_S`` on a batch is dropped (``timeout``; it runs on a
thread of its own, so even one that never returns holds up one batch by that long and never
the champion's scoring thread), and the
shadow records are sent without retries by :class:`ShadowSender` (a bounded number of
batches in flight; a batch beyond it is not sent, and counted).
A ``retire`` message, or any ``activate`` later than the ``shadow`` (a promotion included),
ends the shadowing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from ja4_core.bundle import LoadedBundle, ModelStore
from ja4_core.control import ControlMessage, challenger_live, order_key, supersedes
from ja4_core.errors import BundleError, ControlError
from ja4_core.features import KEY_FIELDS
from stream_scorer import metrics
from stream_scorer.model_holder import ActiveModel, load_verified
from stream_scorer.output_producer import DeliveryFailed, Output, OutputProducer
from stream_scorer.parsing import ParsedBatch, parse_batch
from stream_scorer.scoring import ScoredMatrix, score_matrix

log = logging.getLogger(__name__)


@dataclass
class ShadowHolder:
    """The challenger of one model name (or none) and the control messages that set it."""

    store: ModelStore
    model_name: str
    nthreads: int = 1
    eif_evaluator: str = "compiled"
    ae_evaluator: str = "compiled"
    active: ActiveModel | None = None
    #: The challenger slot's latest accepted message (``shadow`` or ``retire``).
    latest: ControlMessage | None = None
    #: The champion's latest ``activate`` seen: a ``shadow`` not later than it is over.
    champion: ControlMessage | None = None
    outcomes: Counter[str] = field(default_factory=Counter)
    #: The last challenger dropped or refused: version, reason, detail, when.
    dropped: dict[str, str] | None = None
    _lock: asyncio.Lock | None = None

    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    def drop(self, version: str, reason: str, detail: str = "") -> bool:
        """Stop shadowing ``version`` (if it is the challenger) and report why; True if dropped."""
        active = self.active
        if active is None or active.version != version:
            return False
        self.active = None
        self._report(version, reason, detail)
        metrics.SHADOW_INFO.info({"model_name": self.model_name, "model_version": ""})
        return True

    def _report(self, version: str, reason: str, detail: str) -> None:
        self.dropped = {"version": version, "reason": reason, "detail": detail[:500],
                        "at": datetime.now(timezone.utc).isoformat()}
        self.count(f"dropped:{reason}")
        metrics.SHADOW_DROPPED.labels(reason=reason).inc()
        log.warning("shadow: challenger %s/%s dropped (%s)%s", self.model_name, version, reason,
                    f": {detail}" if detail else "")

    async def apply(self, msg: ControlMessage) -> str:
        """Apply one verified ``shadow`` or ``retire`` message; return the outcome. Never raises
        for a bad message or bundle: the champion serves on whatever happens here."""
        async with self.lock:
            if msg.model != self.model_name:
                return "ignored:other-model"
            if not supersedes(msg, self.latest):
                assert self.latest is not None
                outcome = "ignored:replayed" if order_key(msg) == order_key(self.latest) else "ignored:older"
                self.count(outcome)
                return outcome
            self.latest = msg
            if msg.type == "retire":
                if not self.drop(msg.version, "retired"):
                    self.count("retired")
                return "retired"
            if not challenger_live(msg, self.champion):
                self.count("ignored:superseded")  # an activation came after it: nothing to shadow
                return "ignored:superseded"
            if self.active is not None and self.active.version == msg.version:
                self.count("ignored:same-version")
                return "ignored:same-version"
            return await self._load(msg)

    async def on_champion(self, msg: ControlMessage) -> None:
        """The champion's latest ``activate``: it ends a shadowing announced before it."""
        async with self.lock:
            if msg.model != self.model_name or not supersedes(msg, self.champion):
                return
            self.champion = msg
            active = self.active
            if active is not None and not challenger_live(self.latest, msg):
                promoted = msg.version == active.version
                self.drop(active.version, "promoted" if promoted else "superseded",
                          f"activate of {msg.version} issued {msg.issued_at}")

    async def _load(self, msg: ControlMessage) -> str:
        previous = self.active
        self.active = None  # the old challenger stops at once; the new one shadows once loaded
        try:
            path = self.store.resolve_uri(msg.uri, msg.model, msg.version)
        except (ControlError, BundleError, ValueError, OSError) as exc:
            self._report(msg.version, "refused:uri", str(exc))
            return "refused:uri"
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            bundle = await loop.run_in_executor(None, load_verified, path, msg.manifest_sha256, self.nthreads,
                                                self.eif_evaluator, self.ae_evaluator)
        except BundleError as exc:
            self._report(msg.version, "refused:bundle", str(exc))
            return "refused:bundle"
        except Exception as exc:  # noqa: BLE001 - an unexpected library error must not reach the champion
            self._report(msg.version, "refused:error", repr(exc))
            return "refused:error"
        if bundle.model != self.model_name:
            self._report(msg.version, "refused:bundle", f"bundle is for model {bundle.model!r}")
            return "refused:bundle"
        if self.latest is not msg:  # overtaken while loading (cannot happen under the lock; kept cheap)
            return "ignored:older"
        self.active = ActiveModel(bundle=bundle, issued_at=msg.issued_at_dt, loaded_at=datetime.now(timezone.utc),
                                  load_seconds=time.perf_counter() - started, source="shadow")
        del previous
        self.count("shadowing")
        metrics.SHADOW_INFO.info({"model_name": self.model_name, "model_version": bundle.version})
        log.info("shadow: challenger %s/%s loaded in %.3fs beside the champion", self.model_name, bundle.version,
                 self.active.load_seconds)
        return "shadowing"

    def describe(self) -> dict[str, Any]:
        """The challenger for ``/model`` (None fields when there is none)."""
        active = self.active
        return {"active": active.describe() if active else None,
                "announced": self.latest.version if self.latest is not None and self.latest.type == "shadow" else None,
                "outcomes": dict(self.outcomes), "dropped": self.dropped}


@dataclass
class ShadowScored:
    """The challenger's numbers for one batch, with the model and the parse they belong to."""

    model: ActiveModel
    parsed: ParsedBatch
    scored: ScoredMatrix


def score_challenger(parsed: ParsedBatch, values: list[bytes | None], champion: LoadedBundle,
                     challenger: ActiveModel, max_envelope_records: int) -> ShadowScored:
    """Blocking (the scoring thread): one call of the challenger on the whole batch. The
    champion's parse is reused when both models read the same features; otherwise the same
    messages are parsed for the challenger (the valid records, which depend on the key
    fields only, are then the same, in the same order)."""
    features = challenger.bundle.ensemble.features
    if tuple(features) != tuple(champion.ensemble.features):
        parsed = parse_batch(values, features, max_envelope_records)
    # No reasons for the challenger: its records carry scores and levels only.
    return ShadowScored(challenger, parsed, score_matrix(parsed, challenger.bundle, reasons_from=None))


def _in_own_thread(fn: Any, *args: Any) -> asyncio.Future[Any]:
    """``fn(*args)`` on a new daemon thread, its outcome as a future of the running loop.

    Why not the scoring thread (or any pool): a call that never returns would hold that
    thread, and with it every later batch of the champion; and a pool's threads are joined
    when the process exits, so a hung call would also keep a stopping worker from exiting.
    A daemon thread per batch costs ~0.1 ms against a batch's tens of milliseconds."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if not future.done():  # the deadline may have passed: then nobody waits any more
            if exc is None:
                future.set_result(result)
            else:
                future.set_exception(exc)

    def run() -> None:
        try:
            result, exc = fn(*args), None
        except BaseException as err:  # noqa: BLE001 - handed to the awaiting task
            result, exc = None, err
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:  # the loop closed meanwhile: the worker is gone
            pass

    threading.Thread(target=run, name="shadow-score", daemon=True).start()
    return future


async def score_beside(holder: ShadowHolder, parsed: ParsedBatch, values: list[bytes | None],
                       champion: LoadedBundle, max_envelope_records: int,
                       timeout_s: float) -> ShadowScored | None:
    """The challenger's scores of a batch the champion scored, or None (no challenger, or it
    raised or took longer than ``timeout_s``: then it is dropped and reported, and the
    champion's batch goes on unchanged)."""
    challenger = holder.active  # one reference for the whole batch, as for the champion
    if challenger is None or len(parsed) == 0:
        return None
    try:
        return await asyncio.wait_for(
            _in_own_thread(score_challenger, parsed, values, champion, challenger, max_envelope_records), timeout_s)
    except asyncio.TimeoutError:
        log.error("shadow: challenger %s took longer than %.1f s (SHADOW_SCORE_TIMEOUT_S) on a batch of %d records",
                  challenger.version, timeout_s, len(parsed))
        holder.drop(challenger.version, "timeout", f"no scores within {timeout_s:g} s for {len(parsed)} records")
        return None
    except Exception as exc:  # noqa: BLE001 - a challenger bug must never reach the champion's scores
        log.exception("shadow: challenger %s raised while scoring a batch of %d records", challenger.version,
                      len(parsed))
        holder.drop(challenger.version, "scoring", repr(exc))
        return None


def shadow_outputs(champion_parsed: ParsedBatch, champion: ScoredMatrix, champion_version: str,
                   shadow: ShadowScored, keys: list[bytes | None], topic: str,
                   now: datetime | None = None) -> list[Output]:
    """The shadow score records of one batch (Python thread), one per record both models
    scored, and the level-agreement counts. Builds new dicts: the champion's records are
    not touched."""
    parsed, scored, bundle = shadow.parsed, shadow.scored, shadow.model.bundle
    n = len(parsed)
    if n != len(champion_parsed) or parsed.message_index != champion_parsed.message_index:
        log.warning("shadow: batch skipped: the challenger's parse gave %d records, the champion's %d",
                    n, len(champion_parsed))
        return []
    scored_at = (now or datetime.now(timezone.utc)).isoformat(timespec="milliseconds")
    batch, cbatch = scored.batch, champion.batch
    anomaly, eif, c_anomaly = batch.anomaly.tolist(), batch.eif.tolist(), cbatch.anomaly.tolist()
    ae = batch.ae.tolist() if batch.ae is not None else [None] * n
    xgb = batch.xgb.tolist() if batch.xgb is not None else [None] * n
    levels, c_levels = scored.levels, champion.levels
    header = [("model-version", bundle.version.encode())]
    dumps, records, origin = orjson.dumps, parsed.records, parsed.message_index
    out = []
    agree = 0
    for i in range(n):
        rec = records[i]
        doc = {k: rec.get(k) for k in KEY_FIELDS}
        doc.update(anomaly_score=anomaly[i], eif_score=eif[i], ae_score=ae[i], xgb_prob=xgb[i],
                   threat_level=levels[i], model_name=bundle.model, model_version=bundle.version,
                   champion_version=champion_version, champion_anomaly_score=c_anomaly[i],
                   champion_threat_level=c_levels[i], scored_at=scored_at)
        agree += levels[i] == c_levels[i]
        out.append(Output(topic, keys[origin[i]], dumps(doc), header))
    metrics.SHADOW_SCORES.inc(n)
    metrics.SHADOW_AGREEMENT.labels(agree="yes").inc(agree)
    metrics.SHADOW_AGREEMENT.labels(agree="no").inc(n - agree)
    return out


class ShadowSender:
    """Sends shadow records once, without retries and without holding up the champion's
    batch: at most :attr:`MAX_INFLIGHT` batches wait for the broker's confirmation; a batch
    beyond that (the broker lags far behind) is not sent. Failures are counted and logged,
    never raised."""

    #: Batches of shadow records awaiting confirmation at once.
    MAX_INFLIGHT = 64

    def __init__(self) -> None:
        self._inflight: set[asyncio.Future[None]] = set()

    def send(self, producer: OutputProducer, outputs: list[Output]) -> None:
        if not outputs:
            return
        if len(self._inflight) >= self.MAX_INFLIGHT:
            metrics.SHADOW_SEND_FAILURES.inc(len(outputs))  # the broker lags: shadow records give way
            return
        future = asyncio.ensure_future(self._send(producer, outputs))
        self._inflight.add(future)
        future.add_done_callback(self._inflight.discard)

    async def _send(self, producer: OutputProducer, outputs: list[Output]) -> None:
        try:
            await producer.send_batch(outputs)
        except DeliveryFailed as exc:
            metrics.SHADOW_SEND_FAILURES.inc(len(exc.failed))
            log.warning("shadow: %d shadow score record(s) not delivered: %s", len(exc.failed), exc.error)
        except Exception as exc:  # noqa: BLE001 - never reaches the champion's batch
            metrics.SHADOW_SEND_FAILURES.inc(len(outputs))
            log.warning("shadow: sending %d shadow score record(s) failed: %r", len(outputs), exc)

    async def wait(self) -> None:
        """Wait for the batches in flight (on stop)."""
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
