"""Follows the control topic on every replica, outside the consumer group.

Why a dedicated consumer rather than a Faust topic agent: the features topic is split
across the replicas' consumer group, but every replica must see *every* control message.
A Faust ``GlobalTable`` would do that too, but it keeps a changelog of its own and restores
it on every rebalance; a plain aiokafka consumer with no ``group_id`` that is *assigned*
all partitions of the (compacted) control topic reads everything, never commits, never
takes part in a rebalance, and replays the topic from the start on each start, which is
exactly "activate the latest message per model".

Start-up: read the topic up to its end offsets, keep the latest valid message for this
replica's model, activate it; if there is none (or it fails) fall back to the store's
``CURRENT``; if there is neither, the holder stays not-ready and the agent waits.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from .control import ControlMessage, parse_control
from .errors import ControlError
from .kafka_config import aiokafka_security
from .model_holder import ModelHolder
from .settings import Settings

log = logging.getLogger(__name__)

RETRY_PENDING_S = 5.0


async def ensure_control_topic(settings: Settings) -> None:
    """Create the compacted control topic when missing (idempotent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers,
                                **aiokafka_security(settings))
    await admin.start()
    try:
        existing = await admin.list_topics()
        if settings.topic_control not in existing:
            try:
                await admin.create_topics([NewTopic(settings.topic_control, num_partitions=1,
                                                    replication_factor=1,
                                                    topic_configs={"cleanup.policy": "compact"})])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


class ControlFollower:
    """Reads all partitions of the control topic and feeds the model holder."""

    def __init__(self, settings: Settings, holder: ModelHolder) -> None:
        self.settings = settings
        self.holder = holder
        self.consumer: AIOKafkaConsumer | None = None
        self.messages_seen = 0
        self.last_message: dict[str, Any] | None = None

    def _parse(self, value: bytes | None) -> ControlMessage | None:
        try:
            return parse_control(value, self.settings.signing_keys)
        except ControlError as exc:
            log.warning("control: refused message: %s", exc)
            self.holder.count("refused:" + ("signature" if "sign" in str(exc) else "malformed"))
            return None

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
        latest: ControlMessage | None = None
        while await self._behind(tps, end):
            batch = await self.consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    self.messages_seen += 1
                    msg = self._parse(rec.value)
                    if msg is not None and msg.model == self.holder.model_name:
                        if latest is None or msg.issued_at_dt >= latest.issued_at_dt:
                            latest = msg
        outcome = "none"
        if latest is not None:
            self.last_message = latest.__dict__
            outcome = await self.holder.apply(latest)
        if self.holder.active is None:
            fallback = await self.holder.activate_current()
            log.info("control: latest message %s; store CURRENT %s", outcome, fallback)

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
                    self.messages_seen += 1
                    msg = self._parse(rec.value)
                    if msg is not None:
                        self.last_message = msg.__dict__
                        await self.holder.apply(msg)
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
