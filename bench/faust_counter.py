"""The framework ceiling: a minimal Faust app whose agent only counts messages.

Run as a subprocess: ``python -m bench.faust_counter worker -l warning`` with
``BENCH_BOOTSTRAP``, ``BENCH_TOPIC``, ``BENCH_APP_ID`` and ``SCORER_WEB_PORT`` set.
Same consumer settings as the scorer where they matter (raw bytes, memory store, earliest).
``/count`` returns the count and the wall-clock times of the first and last message.
"""

from __future__ import annotations

import os
import tempfile
import time

import faust
from faust.web import Request, Response, View

BOOT = os.environ.get("BENCH_BOOTSTRAP", "localhost:9092")
app = faust.App(
    os.environ.get("BENCH_APP_ID", "bench-counter"),
    broker=[f"kafka://{s}" for s in BOOT.split(",")],
    store="memory://",
    autodiscover=False,
    topic_allow_declare=False,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=6, broker_heartbeat_interval=1, broker_rebalance_timeout=6,
    broker_commit_interval=1.0,
    stream_buffer_maxsize=4096,
    web_port=int(os.environ.get("SCORER_WEB_PORT", "6099")),
    web_bind="127.0.0.1", web_host="127.0.0.1",
    datadir=tempfile.mkdtemp(prefix="bench-faust-"),
)
topic = app.topic(os.environ.get("BENCH_TOPIC", "bench"), key_type=bytes, value_type=bytes,
                  key_serializer="raw", value_serializer="raw")
STATE = {"count": 0, "first": None, "last": None}


@app.agent(topic)
async def count(stream):
    async for _value in stream:
        now = time.time()
        if STATE["first"] is None:
            STATE["first"] = now
        STATE["count"] += 1
        STATE["last"] = now


@app.page("/count")
class Count(View):
    async def get(self, request: Request) -> Response:
        return self.json(STATE)


@app.page("/health")
class Health(View):
    async def get(self, request: Request) -> Response:
        try:
            parts = [tp.partition for tp in app.consumer.assignment()]
        except Exception:  # noqa: BLE001
            parts = []
        return self.json({"partitions": parts}, status=200 if parts else 503)


if __name__ == "__main__":
    app.main()
