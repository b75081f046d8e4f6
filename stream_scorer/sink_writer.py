"""Writing a batch of score rows to ClickHouse for the sink: retried while ClickHouse is
unusable, split when it refuses rows.

Two kinds of failure, told apart by :func:`ja4_core.clickhouse_io.is_data_error` (by class
and ClickHouse error code, never by message text):

* **not about the data** (connection refused, server down, timeout, the table missing or
  unwritable): the same rows are tried ``OUTPUT_DELIVERY_ATTEMPTS`` times in all, waiting
  ``OUTPUT_RETRY_BACKOFF_S`` between attempts (doubling, at most 30 s); then
  :class:`WriteFailed` is raised. The caller must then stop without acking the batch, so
  the consumer group re-delivers it: nothing is skipped, nothing read past it is committed.
* **about the data** (ClickHouse refuses a row): the rows are split in halves and each
  half written again, down to the refused rows, which are returned for the DLQ. With ``b``
  refused rows among ``n`` that is O(b log n) inserts, not ``n`` (each insert is one
  MergeTree part). An outage met while splitting is retried the same way, keeping the
  halves already written.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any, Callable, Generic, Sequence, TypeVar

from ja4_core.errors import Ja4StreamError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The longest wait between two attempts, whatever the backoff has doubled to.
MAX_BACKOFF_S = 30.0


class WriteFailed(Ja4StreamError):
    """ClickHouse did not take a batch after every attempt, for a reason not about its rows."""


class RowsRefused(Exception):
    """Internal: ClickHouse refused (some of) the rows of one insert; carries the cause."""


class ScoreWriter(Generic[T]):
    """Writes rows with ``insert`` (one call = one INSERT), each row paired with an item
    (the sink's event) so refused rows can be dead-lettered. Counts what it does, for
    ``/metrics``; :attr:`blocked` is True while a failed attempt waits for its retry."""

    def __init__(self, insert: Callable[[Sequence[Any]], Any], *, attempts: int, backoff_s: float,
                 is_data_error: Callable[[BaseException], bool],
                 pool: concurrent.futures.ThreadPoolExecutor | None = None) -> None:
        self._insert = insert
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._is_data_error = is_data_error
        # One thread: the embedded engine sees one caller, and inserts stay in order. Writers
        # of one connection (the scores, the labels) share it (``pool``).
        self._pool = pool or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="clickhouse")
        self.blocked = False
        self.inserts = 0          #: INSERT statements sent (succeeded or not)
        self.failed_attempts = 0  #: attempts that failed for a reason not about the data
        self.retries = 0          #: attempts made again after such a failure
        self.refused_rows = 0     #: rows ClickHouse refused (returned for the DLQ)

    async def write(self, rows: Sequence[Any], items: Sequence[T]) -> list[tuple[T, str]]:
        """Write every row; return ``(item, reason)`` of the rows ClickHouse refused. Raises
        :class:`WriteFailed` when an insert failed ``attempts`` times for another reason."""
        refused: list[tuple[T, str]] = []
        todo = [(0, len(rows))] if rows else []
        while todo:  # a stack of [lo, hi) ranges, lowest first: rows are written in order
            lo, hi = todo.pop()
            try:
                await self._insert_retrying(rows[lo:hi])
            except RowsRefused as exc:
                if hi - lo == 1:
                    refused.append((items[lo], f"sink: score record refused by ClickHouse: {exc.__cause__}"[:1000]))
                    self.refused_rows += 1
                else:
                    mid = (lo + hi) // 2
                    todo += [(mid, hi), (lo, mid)]
        return refused

    @property
    def pool(self) -> concurrent.futures.ThreadPoolExecutor:
        """The one thread that talks to ClickHouse (for another writer or a read of the same connection)."""
        return self._pool

    async def _insert_retrying(self, rows: Sequence[Any]) -> None:
        loop = asyncio.get_running_loop()
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            self.inserts += 1
            try:
                await loop.run_in_executor(self._pool, self._insert, rows)
            except Exception as exc:  # classified just below: the rows, or ClickHouse itself
                if self._is_data_error(exc):
                    raise RowsRefused() from exc
                self.failed_attempts += 1
                self.blocked = True
                if attempt == self.attempts:
                    raise WriteFailed(f"insert of {len(rows)} rows into ClickHouse failed {attempt} times; "
                                      f"last error: {exc!r}"[:1000]) from exc
                log.warning("sink: insert of %d rows failed (attempt %d of %d: %r); retrying in %.1fs",
                            len(rows), attempt, self.attempts, exc, delay)
                self.retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
            else:
                self.blocked = False
                return

    def close(self) -> None:
        self._pool.shutdown(wait=False)


async def consume_batches(stream: Any, handle: Callable[[Any, list], Any], *, what: str, batch_max: int,
                          within_s: float, state: dict[str, Any], on_fatal: Callable[[BaseException], None]) -> None:
    """The body of each sink agent (scores, shadow scores, labels): take batches without
    acking, hand each to ``handle`` (which acks it once written), and on any failure stop
    reading with the batch unacked, so it is re-delivered rather than skipped. After such a
    failure (``state["failed"]``) a restarted agent reads nothing."""
    from ja4_core.logs import redact

    if state["failed"] is not None:  # restarted (a rebalance) after a failed write
        await asyncio.Event().wait()
    async for events in stream.noack_take(batch_max, within=within_s):
        try:
            await handle(stream, events)
        except Exception as exc:  # WriteFailed, an unconfirmed DLQ entry, a bug: never skip the batch
            state["failed"] = redact(repr(exc))[:500]  # shown by /health and /ready
            log.critical("sink: stopping; a batch of %d %s stays unacked and is re-delivered: %s",
                         len(events), what, exc)
            on_fatal(exc)
            await asyncio.Event().wait()  # read nothing more; the stop cancels this
