"""``stream-scorer console``: the analysts' review page.

A small static page (``console_static/``: HTML, CSS and plain JavaScript, no build step) over
a JSON API served by aiohttp:

* ``GET /api/rows?level=HIGH,CRITICAL&host=...&ja4=...&limit=N``: the most anomalous windows
  scored in the last hour, with reasons, threat level, model version and any label already
  given (:mod:`.console_data`: directly from a ClickHouse server, or through the sink when
  ClickHouse is the embedded engine);
* ``POST /api/label`` ``{"window_start", "src_ip", "ja4", "host", "label", "analyst"?, "note"?}``:
  checked by :func:`ja4_core.label_record.parse_label` (``source`` = ``console``), then produced
  to ``TOPIC_LABELS`` and confirmed by the broker; the sink stores it in ``soc_labels``;
* ``GET /api/status``: the model served and its challenger, DLQ entries, the scorers' lag.

Access: :mod:`.console_auth` (loopback by default; elsewhere ``CONSOLE_TOKEN`` is required).
A label is only taken as JSON with the page's own origin (or none), so another web site open in
the analyst's browser cannot send labels through a loopback console.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from pathlib import Path
from typing import Any

from ja4_core.label_record import LabelError, parse_label
from ja4_core.logs import redact
from ja4_core.settings import Settings
from stream_scorer.console_auth import COOKIE, bearer, check_bind, token_ok
from stream_scorer.console_data import ReviewQuery, ReviewQueryError, RowSource, RowsUnavailable, row_source
from stream_scorer.console_kafka import FleetStatus, LabelNotDelivered, LabelProducer

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("console_static")
#: Fields the page may send with a label; ``source`` is always ``console``.
PAGE_LABEL_FIELDS = ("window_start", "src_ip", "ja4", "host", "label", "analyst", "note")
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
                    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def build_console(settings: Settings, rows: RowSource | None = None, producer: Any = None,
                  fleet: Any = None) -> Any:
    """The console's aiohttp application (the parts are replaceable for tests)."""
    from aiohttp import web

    rows = rows or row_source(settings)
    producer = producer or LabelProducer(settings)
    fleet = fleet or FleetStatus(settings)
    pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="console-kafka")
    token = settings.console_token

    def authorized(request: Any) -> bool:
        return token_ok(token, bearer(request.headers.get("Authorization")) or request.cookies.get(COOKIE))

    @web.middleware
    async def guard(request: Any, handler: Any) -> Any:
        if request.path == "/" and token and request.query.get("token"):
            if not token_ok(token, request.query["token"]):
                return _headers(web.Response(status=401, text="wrong token\n"))
            resp = web.Response(status=302, headers={"Location": "/"})  # the token leaves the address bar
            resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
            return _headers(resp)
        if not authorized(request):
            return _headers(web.Response(status=401, text="this console needs its token: open /?token=CONSOLE_TOKEN "
                                                          "or send Authorization: Bearer CONSOLE_TOKEN\n"))
        return _headers(await handler(request))

    async def index(request: Any) -> Any:
        return web.FileResponse(STATIC / "index.html")

    async def api_rows(request: Any) -> Any:
        try:
            q = ReviewQuery.from_params(request.query)
        except ReviewQueryError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        try:
            payload = await rows.rows(q)
        except RowsUnavailable as exc:
            return web.json_response({"error": str(exc), "source": rows.describe}, status=503)
        return web.json_response({**payload, "source": rows.describe})

    async def api_status(request: Any) -> Any:
        snap = await asyncio.get_running_loop().run_in_executor(pool, fleet.snapshot)
        return web.json_response({**snap, "source": rows.describe, "labels_topic": settings.topic_labels})

    async def api_label(request: Any) -> Any:
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return web.json_response({"error": "labels are taken from this console's own page only"}, status=403)
        if request.content_type != "application/json":
            return web.json_response({"error": "send the label as application/json"}, status=415)
        try:
            doc = await request.json()
        except ValueError:
            return web.json_response({"error": "not JSON"}, status=400)
        if not isinstance(doc, dict):
            return web.json_response({"error": "a label must be a JSON object"}, status=400)
        extra = sorted(set(doc) - set(PAGE_LABEL_FIELDS))
        if extra:
            return web.json_response({"error": f"unknown field {extra[0][:60]!r}"}, status=400)
        try:
            label = parse_label({**doc, "source": "console"})
        except LabelError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        try:
            await asyncio.get_running_loop().run_in_executor(pool, producer.send, label)
        except LabelNotDelivered as exc:
            return web.json_response({"error": str(exc)}, status=503)
        log.info("console: label %s for %s %s %s sent to %s", label.label, label.src_ip, label.ja4, label.host,
                 settings.topic_labels)
        return web.json_response({"sent": label.as_message()})

    async def on_cleanup(app: Any) -> None:
        await rows.close()
        await asyncio.get_running_loop().run_in_executor(pool, producer.close)
        await asyncio.get_running_loop().run_in_executor(pool, fleet.close)
        pool.shutdown(wait=False)

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC, show_index=False)
    app.router.add_get("/api/rows", api_rows)
    app.router.add_get("/api/status", api_status)
    app.router.add_post("/api/label", api_label)
    app.on_cleanup.append(on_cleanup)
    return app


def _headers(resp: Any) -> Any:
    for name, value in SECURITY_HEADERS.items():
        resp.headers.setdefault(name, value)
    return resp


def console_url(settings: Settings) -> str:
    host = settings.console_host
    return f"http://{'[' + host + ']' if ':' in host else host}:{settings.console_port}/"


def run_console(settings: Settings) -> int:
    """Serve the console until SIGTERM/Ctrl-C. Refuses a non-loopback address without a token."""
    from aiohttp import web

    from ja4_core.kafka_admin import data_topic, ensure_topics

    check_bind(settings.console_host, settings.console_token)
    ensure_topics(settings, [data_topic(settings, settings.topic_labels)])
    app = build_console(settings)
    print(f"review console on {console_url(settings)}"
          f"{' (token required)' if settings.console_token else ''}; labels go to {settings.topic_labels}",
          flush=True)
    try:
        web.run_app(app, host=settings.console_host, port=settings.console_port, print=None,
                    access_log=None, handle_signals=True)
    except OSError as exc:
        log.error("console: cannot serve on %s: %s", console_url(settings), redact(exc))
        return 1
    return 0
