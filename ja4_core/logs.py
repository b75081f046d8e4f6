"""Logging set-up, and the masking of secrets in everything the processes print.

Human-readable lines by default, JSON lines with ``LOG_FORMAT=json``. Every line, whoever
logs it (our code, Faust, aiokafka, librdkafka, clickhouse-connect, a traceback), passes
:func:`redact` on its way out: the password of any ``scheme://user:password@`` URL becomes
``***``, and so does each secret value given to :func:`configure_logging` (the settings'
:meth:`~ja4_core.settings.Settings.secret_values`). The CLIs pass the lines they print
themselves (errors, status) through :func:`redact` too.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import datetime, timezone
from typing import Iterable
from urllib.parse import unquote, urlsplit

import orjson

_CONTEXT_KEYS = ("model_version", "partition", "offset", "topic")

MASK = "***"
#: ``scheme://user:password@``: the password is whatever lies between the first ':' of the
#: user info and the '@' (URL syntax percent-encodes '@', '/' and spaces inside it).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?P<password>[^@\s/]*)@")
#: Secrets shorter than this are masked in URLs and reprs but not searched for in free text:
#: replacing every "a" or "12" of every log line would destroy the logs.
MIN_FREE_TEXT_SECRET = 4


def mask_url(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***``.

    >>> mask_url("http://ja4:s3cret@clickhouse:8123/ja4")
    'http://ja4:***@clickhouse:8123/ja4'
    >>> mask_url("chdb://./var/clickhouse")
    'chdb://./var/clickhouse'
    """
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK if m['password'] else ''}@", url)


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The password of a URL's user info, as written and percent-decoded (both may be printed)."""
    if not url:
        return ()
    try:
        password = urlsplit(url).password
    except ValueError:
        return ()
    if not password:
        return ()
    return tuple(dict.fromkeys((password, unquote(password))))


class Redactor:
    """Masks URL passwords and the given secret values in a text."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # Longest first, so that a secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_FREE_TEXT_SECRET}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = mask_url(text)
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


_redactor = Redactor()


def redact(text: object) -> str:
    """``str(text)`` with the secrets of this process (see :func:`configure_logging`) masked."""
    return _redactor(str(text))


class RedactingFormatter(logging.Formatter):
    """The plain text format, secrets masked (in the message and in tracebacks alike)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any context extras, secrets
    masked before encoding (so an escaped form of a secret cannot slip through)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "message": redact(record.getMessage())}
        for key in _CONTEXT_KEYS:
            if hasattr(record, key):
                value = getattr(record, key)
                doc[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            doc["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(doc, default=str).decode()


def configure_logging(level: str = "info", fmt: str = "text", secrets: Iterable[str | None] = ()) -> None:
    """Log to stderr at ``level`` in ``fmt``, masking URL passwords and ``secrets`` everywhere
    (they are also what :func:`redact` masks from now on)."""
    global _redactor
    _redactor = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
