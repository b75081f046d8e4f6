"""Follows the control topic on every replica, outside the consumer group.

Why a dedicated consumer rather than a Faust topic agent: the features topic is split
across the replicas' consumer group, but every replica must see *every* control message.
A Faust ``GlobalTable`` would do that too, but it keeps a changelog of its own and restores
it on every rebalance; a plain aiokafka consumer with no ``group_id`` that is *assigned*
all partitions of the (compacted) control topic reads everything, never commits, never
takes part in a rebalance, and replays the topic from the start on each start, which is
exactly "activate the latest message per model".

Start-up: read the topic up to its end offsets, keep the latest valid message for this
replica's model, activate it (and load the live challenger beside it, see :mod:`.shadow`); if there is none (or it fails) fall back to the store's
``CURRENT``; if there is neither, the holder stays not-ready and the agent waits. "Latest"
is :func:`.control.supersedes`, the rule the holder applies to every later message too, so a
replica that restarts ends on the version a running one serves.

A message that cannot be parsed or verified, for whatever reason, is refused, counted
(``refused:<reason>``) and logged once, and the follower reads the next one: a bad message
must never send the follower back to the start of the topic to meet it again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from ja4_core.control import CHALLENGER, ControlLedger, ControlMessage, ControlRecord, Offer, supersedes
from ja4_core.kafka_security import aiokafka_security
from ja4_core.settings import Settings
from stream_scorer.model_holder import ModelHolder
from stream_scorer.shadow import ShadowHolder

log = logging.getLogger(__name__)

RETRY_PENDING_S = 5.0


async def ensure_control_topic(settings: Settings) -> None:
    """Create the compacted control topic when missing (idempotent; :mod:`.topics` decides
    how). A failure is logged, not raised: the topic may have been pre-created by an operator
    who did not grant topic creation, and the consumer reports an unreachable broker itself."""
    from ja4_core.kafka_admin import TopicError, control_topic, ensure_topics

    try:
        await asyncio.to_thread(ensure_topics, settings, [control_topic(settings)], 10.0)
    except TopicError as exc:
        log.warning("control: could not ensure topic %s: %s", settings.topic_control, exc)


class ControlFollower:
    """Reads all partitions of the control topic and feeds the model holder."""

    def __init__(self, settings: Settings, holder: ModelHolder, shadow: ShadowHolder | None = None) -> None:
        self.settings = settings
        self.holder = holder
        #: The challenger beside the champion (``shadow``/``retire`` messages go to it).
        self.shadow = shadow or ShadowHolder(holder.store, holder.model_name, holder.nthreads,
                                             holder.eif_evaluator, holder.ae_evaluator)
        self.consumer: AIOKafkaConsumer | None = None
        self.messages_seen = 0
        self.last_message: dict[str, Any] | None = None
        self.ledger = self._new_ledger()
        #: Next offset not yet seen, per partition: a message read again after a reconnect
        #: (the topic is replayed from the start) is neither counted nor logged twice.
        self._seen_upto: dict[int, int] = {}
        #: Sees every record first; True takes it (a ``retrain_request``, see :mod:`.drift_watch`),
        #: so it never reaches the ledger of model announcements.
        self.on_record: Callable[[ControlRecord], bool] | None = None

    def _new_ledger(self) -> ControlLedger:
        return ControlLedger(self.settings.signing_keys, self.settings.control_max_future_skew_s)

    def _offer(self, rec: Any) -> ControlMessage | None:
        """One raw record through the ledger; the verified message of this replica's model
        that is now the latest, or None. A refusal is counted and logged once."""
        record = ControlRecord(rec.value, rec.key, rec.partition, rec.offset)
        first_time = rec.offset >= self._seen_upto.get(rec.partition, 0)
        if first_time:
            self.messages_seen += 1
            self._seen_upto[rec.partition] = rec.offset + 1
        if self.on_record is not None and self.on_record(record):
            return None
        return self._take(self.ledger.offer(record), record, first_time)

    def _take(self, offer: Offer, record: ControlRecord, first_time: bool = True) -> ControlMessage | None:
        if offer.error is not None:
            if first_time:
                log.warning("control: refused message at %s[%d]@%d (%s): %s", self.settings.topic_control,
                            record.partition, record.offset, offer.reason, offer.error)
                self.holder.count("refused:" + offer.reason)
            return None
        msg = offer.message
        if msg is None or msg.model != self.holder.model_name:
            return None
        if offer.outcome == "latest":
            return msg
        if first_time and msg.role == CHALLENGER:
            self.shadow.count("ignored:replayed" if msg == self.shadow.latest else "ignored:older")
        elif first_time:  # a replay or an out-of-date message: the holder says why it changes nothing
            self.holder.count("ignored:replayed" if msg == self.holder.latest else "ignored:older")
            log.info("control: %s/%s issued %s ignored (not later than the latest message)",
                     msg.model, msg.version, msg.issued_at)
        return None

    async def _apply(self, msg: ControlMessage) -> None:
        """``activate`` to the champion's holder (then the challenger hears of it: a later
        activation ends a shadowing), ``shadow``/``retire`` to the challenger's."""
        self.last_message = msg.__dict__
        try:
            if msg.role == CHALLENGER:
                await self.shadow.apply(msg)
            else:
                await self.holder.apply(msg)
                await self.shadow.on_champion(msg)
        except Exception:  # noqa: BLE001 - a message must never stop the follower (see module doc)
            log.exception("control: applying %s/%s failed unexpectedly", msg.model, msg.version)
            self.holder.count("refused:error")

    async def start(self) -> None:
        try:
            await ensure_control_topic(self.settings)
        except KafkaError as exc:
            log.warning("control: could not ensure topic %s: %r", self.settings.topic_control, exc)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers, group_id=None,
            enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=50,
            **aiokafka_security(self.settings))
        await self.consumer.start()

    async def _assign_all(self) -> list[TopicPartition]:
        assert self.consumer is not None
        topic = self.settings.topic_control
        for _ in range(50):
            parts = self.consumer.partitions_for_topic(topic)
            if parts:
                break
            await self.consumer._client.force_metadata_update()  # noqa: SLF001 - no public API
            await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts or {0})]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        return tps

    async def bootstrap(self) -> None:
        """Activate the latest message per model from the topic, else ``CURRENT``."""
        assert self.consumer is not None
        tps = await self._assign_all()
        end = await self.consumer.end_offsets(tps)
        self.ledger = self._new_ledger()  # the topic is read again from its start
        while await self._behind(tps, end):
            batch = await self.consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    self._offer(rec)
        outcome = "none"
        chosen = self.ledger.latest.get(self.holder.model_name)
        if chosen is not None and supersedes(chosen.message, self.holder.latest):
            self.last_message = chosen.message.__dict__
            try:
                outcome = await self.holder.apply(chosen.message)
            except Exception:  # noqa: BLE001 - see _apply
                log.exception("control: applying %s/%s failed unexpectedly", chosen.message.model,
                              chosen.message.version)
                outcome = "refused:error"
        if self.holder.active is None:
            fallback = await self.holder.activate_current()
            log.info("control: latest message %s; store CURRENT %s", outcome, fallback)
        if chosen is not None:
            await self.shadow.on_champion(chosen.message)
        # Then the challenger slot's latest message: a live ``shadow`` is loaded beside the
        # champion (the agent does not wait for it), a ``retire`` ends a running one.
        challenger = self.ledger.challenger.get(self.holder.model_name)
        if challenger is not None and supersedes(challenger.message, self.shadow.latest):
            await self._apply(challenger.message)

    async def _behind(self, tps: list[TopicPartition], end: dict[TopicPartition, int]) -> bool:
        assert self.consumer is not None
        for tp in tps:
            if await self.consumer.position(tp) < end[tp]:
                return True
        return False

    async def follow(self) -> None:
        """Apply every new control message, forever; retry unreadable bundles."""
        assert self.consumer is not None
        while True:
            batch = await self.consumer.getmany(timeout_ms=int(RETRY_PENDING_S * 1000))
            for records in batch.values():
                for rec in records:
                    msg = self._offer(rec)
                    if msg is not None:
                        await self._apply(msg)
            # Messages refused as future-dated are taken up once they are due, as a replica
            # that starts then would take them: running and restarted replicas agree.
            for offer in self.ledger.due():
                if offer.outcome == "latest" and offer.message is not None \
                        and offer.message.model == self.holder.model_name:
                    await self._apply(offer.message)
            if not batch and self.holder.pending_retry is not None:
                await self.holder.retry_pending()

    async def run(self) -> None:
        """Start, bootstrap, follow; reconnect on broker errors; close the consumer on stop."""
        try:
            await self._run()
        finally:
            await self.stop()

    async def _run(self) -> None:
        while True:
            try:
                if self.consumer is None:
                    await self.start()
                await self.bootstrap()
                await self.follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker outage: keep serving, retry shortly
                log.warning("control: follower error %r; retrying in 2s", exc)
                await self.stop()
                await asyncio.sleep(2.0)

    async def stop(self) -> None:
        if self.consumer is not None:
            try:
                await self.consumer.stop()
            finally:
                self.consumer = None
