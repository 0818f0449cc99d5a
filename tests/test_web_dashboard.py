"""The dashboard in a real browser (Debian's Chromium, through Playwright) during a replay-driven
run: replay exchange → `cryptocast ingest` → `cryptocast forecast` (tiny model) → Redis → web.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from config.settings import load_settings
from core.series import SeriesId
from cryptocast.redis_server import RedisServer
from storage.client import Redis
from storage.keys import Keys
from storage.predictions import PredictionBus
from tests.e2e_support import service_env, start_pipeline, start_replay, wait_for
from tests.web_support import serve

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"
SERIES = SeriesId.parse("binance:LINK/USDT:1m")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="scripts/ensure-chromium.sh installs it")
async def test_dashboard_chart_follows_new_predictions(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    exchange = await start_replay(["LINK/USDT"], 1500, tmp_path, speed=90)
    env = service_env(redis_server.url, exchange, [SERIES.key], retrain_every=400, stale_after=30)
    ingest, forecast = start_pipeline(env, tmp_path)
    settings = load_settings(
        redis_url=redis_server.url,
        series=[SERIES.key],
        clock="exchange",
        schedule={"stale_after": 30},
        web={"status_cache_s": 1},
    )
    bus = PredictionBus(redis, Keys())
    try:

        async def some_predictions() -> bool:
            return await bus.count(SERIES) >= 15

        await wait_for(
            some_predictions,
            75,
            "the forecaster's first predictions",
            on_fail=lambda: forecast.tail() + ingest.tail(),
        )
        async with serve(settings, redis) as base, async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(base + "/")

                async def loaded() -> Any:
                    return await page.evaluate(
                        "() => window.cryptocast && window.cryptocast.predLine.data().length > 0"
                        " && window.cryptocast.candleSeries.data().length > 0"
                        " && document.getElementById('conn').dataset.state === 'live'"
                        " && window.cryptocast.forecast && window.cryptocast.forecast.points.length"
                    )

                await wait_for(loaded, 30, "the dashboard to draw", on_fail=lambda: str(errors))
                first = await page.evaluate("() => window.cryptocast.lastId")
                n_before = await page.evaluate("() => window.cryptocast.predLine.data().length")

                async def updated() -> Any:
                    return await page.evaluate(
                        "(first) => window.cryptocast.received > 0"
                        " && window.cryptocast.lastId !== first"
                        " && document.getElementById('p-id').textContent"
                        "    === window.cryptocast.lastId",
                        first,
                    )

                await wait_for(updated, 30, "a live prediction on the page", on_fail=forecast.tail)
                last_id = await page.evaluate("() => window.cryptocast.lastId")
                newest = await bus.latest(SERIES)
                assert newest is not None and int(last_id.split("-")[0]) > int(first.split("-")[0])
                # the chart's prediction line gained the point of the new prediction
                stored = [p for p in await bus.since(SERIES, first) if p.id == last_id]
                assert stored, f"{last_id} is not in the prediction stream"
                line = await page.evaluate("() => window.cryptocast.predLine.data()")
                assert len(line) > n_before
                assert line[-1]["time"] == stored[0].target_time // 1000
                assert line[-1]["value"] == pytest.approx(stored[0].predicted_close)
                # and nothing the page holds is repeated or out of order
                ids = await page.evaluate("() => window.cryptocast.predictions.map(p => p.as_of)")
                assert ids == sorted(set(ids))
                banner_hidden = await page.evaluate(
                    "() => document.getElementById('banner').hidden"
                )
                assert banner_hidden, await page.inner_text("#banner")
                assert not await page.is_visible("#auth")  # no token configured, none asked
                await page.wait_for_timeout(1500)  # let a few more candles arrive for the picture
                shot = tmp_path / "dashboard.png"
                await page.screenshot(path=str(shot))
                assert shot.stat().st_size > 20_000
                SCREENSHOT.parent.mkdir(exist_ok=True)
                shutil.copyfile(shot, SCREENSHOT)
                assert not errors, errors
            finally:
                await browser.close()
    finally:
        assert forecast.terminate() == 0, forecast.tail()
        assert ingest.terminate() == 0, ingest.tail()
        await exchange.stop()
