"""Logging set-up: one JSON event per line in production, readable lines in a terminal.

Every event about a series carries ``exchange``, ``symbol`` and ``timeframe``: bind them once with
:func:`series_logger` (or ``structlog.contextvars.bind_contextvars(**series.log_fields())`` inside
a per-series task) and every event below inherits them. Standard-library loggers (redis, ccxt,
apscheduler, websockets) go through the same renderer so an operator reads one format.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

from core.series import SeriesId

_SECRET_KEYS = ("password", "secret", "token", "apikey", "api_key", "authorization")


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    # Belt and braces: callers never pass secrets, but a URL or config dump might carry one.
    for k in list(event):
        if any(s in k.lower() for s in _SECRET_KEYS):
            event[k] = "***"
    return event


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(fmt: str = "auto", level: str = "INFO") -> None:
    """Configure structlog and the standard library logging for the whole process.

    ``fmt`` is ``json``, ``console`` or ``auto`` (console when stderr is a terminal).
    """
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Chatty libraries: their INFO is our DEBUG.
    for name in ("websockets", "ccxt", "apscheduler", "urllib3", "asyncio", "aiohttp.access"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def series_logger(series: SeriesId, name: str = "cryptocast", **extra: Any) -> Any:
    """A logger whose every event carries the series' exchange, symbol and timeframe."""
    return structlog.get_logger(name).bind(**series.log_fields(), series=series.key, **extra)
