"""Wiring of the long-running services: build them from settings and run until SIGTERM."""

from __future__ import annotations

import structlog
from prometheus_client import start_http_server

from config.settings import Settings
from cryptocast.runtime import open_store

log = structlog.get_logger(__name__)


def start_metrics(settings: Settings, service: str) -> None:
    """Serve Prometheus metrics on ``CRYPTOCAST_METRICS_PORT`` (0 = off)."""
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
        log.info("metrics.serving", service=service, port=settings.metrics_port)


async def serve_ingest(settings: Settings) -> None:
    """``cryptocast ingest``."""
    from ingest.service import IngestService, run_until_signalled

    redis, store = await open_store(settings)
    start_metrics(settings, "ingest")
    try:
        await run_until_signalled(IngestService(settings, store))
    finally:
        await redis.aclose()


async def serve_forecast(settings: Settings, config_file: str | None) -> None:
    """``cryptocast forecast``."""
    from forecaster.service import ForecastService, run_until_signalled

    redis, store = await open_store(settings)
    start_metrics(settings, "forecaster")
    try:
        await run_until_signalled(ForecastService(settings, store, config_file=config_file))
    finally:
        await redis.aclose()
