"""What the review console shows from ClickHouse, and the two ways it reads it.

* A **ClickHouse server** (``CLICKHOUSE_URL=http(s)://``): the console reads it directly.
* The **embedded engine** (``chdb://PATH``, the default) allows one process per directory,
  and the sink holds it while it runs. So the console never opens it: it asks the sink,
  whose web server answers ``/console/rows`` (:func:`install_review_api`) with the same query
  run on the sink's own ClickHouse thread. While the sink is stopped (with the embedded
  engine the trainer takes its turn), the page says so and keeps the rows it has.

Either way the query is :meth:`ja4_core.clickhouse_io.ClickHouseIO.review_rows`; a request's
filters are checked by :meth:`ReviewQuery.from_params` first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Protocol

from ja4_core.errors import Ja4StreamError, SchemaError
from ja4_core.settings import Settings
from stream_scorer.console_auth import bearer, is_loopback, token_ok

#: Threat levels a filter may name.
LEVELS: tuple[str, ...] = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "NORMAL", "KNOWN_BOT", "LEGITIMATE_BROWSER")
#: How far back the console looks ("the last hour").
WINDOW_S = 3600
MAX_ROWS = 500


class ReviewQueryError(SchemaError):
    """A filter the console does not take (an unknown level, a limit out of range, ...)."""


class RowsUnavailable(Ja4StreamError):
    """The scores cannot be read right now (the sink is stopped, ClickHouse is down)."""


@dataclass(frozen=True)
class ReviewQuery:
    """The console's filters: levels (all when empty), host and JA4 substrings, a row limit."""

    levels: tuple[str, ...] = ()
    host: str = ""
    ja4: str = ""
    limit: int = 100
    window_s: int = WINDOW_S

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> "ReviewQuery":
        """From query parameters ``level`` (comma-separated), ``host``, ``ja4``, ``limit``.

        >>> ReviewQuery.from_params({"level": "high,CRITICAL", "limit": "5"})
        ReviewQuery(levels=('HIGH', 'CRITICAL'), host='', ja4='', limit=5, window_s=3600)
        """
        levels = tuple(x.strip().upper() for x in (params.get("level") or "").split(",") if x.strip())
        bad = [x for x in levels if x not in LEVELS]
        if bad:
            raise ReviewQueryError(f"level {bad[0][:40]!r} is not one of {', '.join(LEVELS)}")
        host, ja4 = params.get("host") or "", params.get("ja4") or ""
        if len(host) > 255 or len(ja4) > 255:
            raise ReviewQueryError("host and ja4 filters are at most 255 characters")
        try:
            limit = int(params.get("limit") or 100)
        except ValueError:
            raise ReviewQueryError("limit must be an integer") from None
        if not 1 <= limit <= MAX_ROWS:
            raise ReviewQueryError(f"limit must be between 1 and {MAX_ROWS}")
        return cls(levels, host.strip(), ja4.strip(), limit)

    def to_params(self) -> dict[str, str]:
        return {"level": ",".join(self.levels), "host": self.host, "ja4": self.ja4, "limit": str(self.limit)}


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(value)


def _reasons(text: Any) -> list[Any]:
    """The ``reasons`` column's JSON text as a list (``[]`` when absent or unreadable)."""
    if isinstance(text, list):
        return text
    try:
        value = json.loads(text or "[]")
    except (TypeError, ValueError):
        return []
    return value if isinstance(value, list) else []


def read_rows(ch: Any, q: ReviewQuery, now: float | None = None) -> dict[str, Any]:
    """The console's rows as plain JSON types: ``{"since": ISO, "rows": [...]}``."""
    since = int((time.time() if now is None else now) - q.window_s)
    rows = ch.review_rows(since=since, levels=q.levels, host=q.host, ja4=q.ja4, limit=q.limit)
    out = []
    for r in rows:
        label = r.get("label")
        out.append({**r, "window_start_iso": datetime.fromtimestamp(r["window_start"], tz=timezone.utc)
                    .strftime("%Y-%m-%dT%H:%M:%SZ"), "scored_at": _iso(r["scored_at"]),
                    "reasons": _reasons(r.get("reasons")),
                    "label": None if label is None else {**label, "created_at": _iso(label["created_at"])}})
    return {"since": _iso(datetime.fromtimestamp(since, tz=timezone.utc)), "rows": out}


# --- the sink's side (embedded ClickHouse) ---------------------------------------------

def install_review_api(app: Any, settings: Settings, ch: Any, pool: concurrent.futures.ThreadPoolExecutor) -> None:
    """``GET /console/rows`` on the sink's web server: :func:`read_rows` on the sink's ClickHouse
    thread. Needs ``CONSOLE_TOKEN`` (as a Bearer token) when one is set, and refuses to answer
    without one when the sink's web server is not bound to loopback."""

    @app.page("/console/rows")
    async def console_rows(web: Any, request: Any) -> Any:
        if not settings.console_token and not is_loopback(settings.scorer_web_host):
            return web.json({"error": "set CONSOLE_TOKEN: the sink's web server is not on loopback"}, status=403)
        if not token_ok(settings.console_token, bearer(request.headers.get("Authorization"))):
            return web.json({"error": "unauthorized"}, status=401)
        try:
            q = ReviewQuery.from_params(request.query)
        except ReviewQueryError as exc:
            return web.json({"error": str(exc)}, status=400)
        payload = await asyncio.get_running_loop().run_in_executor(pool, read_rows, ch, q)
        return web.json(payload)


# --- the console's side ------------------------------------------------------------------

class RowSource(Protocol):
    """Where the console gets its rows; ``describe`` says where, for the page."""

    describe: str

    async def rows(self, q: ReviewQuery) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class SinkRows:
    """Rows through the sink's ``/console/rows`` (the embedded engine's way)."""

    def __init__(self, settings: Settings) -> None:
        host = settings.scorer_web_host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
        host = f"[{host}]" if ":" in host else host
        self.url = f"http://{host}:{settings.sink_web_port}/console/rows"
        self.token = settings.console_token
        self.describe = f"the sink ({self.url}; embedded ClickHouse)"
        self._session: Any = None

    async def rows(self, q: ReviewQuery) -> dict[str, Any]:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with self._session.get(self.url, params=q.to_params(), headers=headers) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise RowsUnavailable(f"the sink answered {resp.status}: {str(body.get('error'))[:200]}")
                return dict(body)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise RowsUnavailable("the sink is not answering (stopped, or the trainer has the embedded "
                                  f"ClickHouse): {type(exc).__name__}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class ClickHouseRows:
    """Rows read directly from a ClickHouse server, on one thread."""

    def __init__(self, settings: Settings) -> None:
        from ja4_core.logs import mask_url

        self.dsn = settings.clickhouse_url
        self.describe = f"ClickHouse ({mask_url(self.dsn)})"
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="console-clickhouse")
        self._ch: Any = None

    def _read(self, q: ReviewQuery) -> dict[str, Any]:
        from ja4_core.clickhouse_io import connect

        try:
            if self._ch is None:
                self._ch = connect(self.dsn)
            return read_rows(self._ch, q)
        except Exception as exc:  # any failure of the server or the connection: reconnect next time
            if self._ch is not None:
                self._ch.close()
            self._ch = None
            raise RowsUnavailable(f"ClickHouse: {type(exc).__name__}") from exc

    async def rows(self, q: ReviewQuery) -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._read, q)

    async def close(self) -> None:
        def close_connection() -> None:
            if self._ch is not None:
                self._ch.close()
                self._ch = None

        await asyncio.get_running_loop().run_in_executor(self._pool, close_connection)
        self._pool.shutdown(wait=False)


def row_source(settings: Settings) -> RowSource:
    """The embedded engine: through the sink; a server: directly."""
    from ja4_core.clickhouse_io import parse_dsn

    if parse_dsn(settings.clickhouse_url).kind == "chdb":
        return SinkRows(settings)
    return ClickHouseRows(settings)
