"""The one way this package runs a Faust app as the process's worker (scorer and sink).

Faust's :class:`~faust.worker.Worker` sets up logging and a terminal spinner of its own; both
are replaced here so that every line goes through our formatter (secrets masked, JSON lines
when asked). Kept apart from the CLI so that the sink, which the CLI starts, does not import
the CLI back.
"""

from __future__ import annotations

from typing import Any

from ja4_core.logs import configure_logging
from ja4_core.settings import Settings


def setup_logging(settings: Settings) -> None:
    """Our logging set-up for a process of this package (level, format, secrets masked)."""
    configure_logging(settings.log_level, settings.log_format, settings.secret_values())


def run_worker(app: Any, settings: Settings) -> None:
    """Run ``app`` as this process's Faust worker until it stops (SIGTERM/Ctrl-C)."""
    from faust.worker import Worker

    worker = Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker.spinner = None  # its terminal escapes would corrupt log lines (and JSON logs)
    # Faust configures its own logging at start; keep ours (and JSON lines when asked).
    worker.on_setup_root_logger = lambda logger, level: setup_logging(settings)  # type: ignore[method-assign]
    worker.execute_from_commandline()
