"""The web app served by a real uvicorn on a loopback port, inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn

from config.settings import Settings
from core.lifecycle import with_timeout
from core.schemas import ModelInfo, Prediction
from storage.paths import ForecastPath, PathPoint
from tests.factories import make_prediction
from web.app import create_app


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # leave pytest's signal handlers alone
        yield


@contextlib.asynccontextmanager
async def serve(settings: Settings, redis: Any) -> AsyncIterator[str]:
    """Run the app until the block ends; yields its base URL (``http://127.0.0.1:<port>``)."""
    app = create_app(settings, redis)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on"
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started or task.done():
                break
            await asyncio.sleep(0.02)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        # the hub must hold its subscription before a test publishes anything it expects live
        await with_timeout(app.state.hub.ready.wait(), 10)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await with_timeout(task, 15)


def prediction(series: str, as_of: int, close: float = 100.0, step_ms: int = 60_000) -> Prediction:
    """A well-formed Prediction message for ``series`` made at ``as_of``."""
    r = 0.001 * ((as_of // step_ms) % 7 - 3)
    return make_prediction(
        series,
        as_of,
        last_close=close,
        predicted_close=close * (1 + r),
        predicted_return=r,
        version="v1-test",
        trained_at=as_of - 3_600_000,
        skill=0.02,
        published_at=as_of + step_ms + 5,
        latency_ms=1.5,
    )


def forecast_path(
    series: str, as_of: int, steps: int, close: float = 100.0, step_ms: int = 60_000
) -> ForecastPath:
    """A well-formed stored path of ``steps`` candles after ``as_of`` (what the forecaster
    writes), each step +0.1% with an interval widening as sqrt(k)."""
    r = 0.001
    points = [
        PathPoint(
            time=as_of + k * step_ms,
            predicted_close=close * math.exp(r * k),
            predicted_return=r,
            lower=close * math.exp(r * k - 0.01 * math.sqrt(k)),
            upper=close * math.exp(r * k + 0.01 * math.sqrt(k)),
        )
        for k in range(1, steps + 1)
    ]
    model = ModelInfo(version="v1-test", kind="lstm", trained_at=as_of - 3_600_000, skill=0.02)
    return ForecastPath(
        series=series,
        model=model,
        as_of=as_of,
        last_close=close,
        interval_level=0.9,
        steps=steps,
        points=points,
    )
