"""``cryptocast demo``'s machinery end to end, and what operators see while it runs.

The real demo (private redis-server, replay exchange over the bundled candles, the real ingest
and forecast processes) with a tiny model, at a higher speed and with faults injected (dropped
connections, malformed messages), so that every figure an operator relies on has something to
count: while predictions flow, both services' ``/metrics`` are scraped and ``cryptocast status
--json`` is run as its own process; then the summary and the PNG are checked.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from core.schemas import Prediction
from cryptocast.demo import Demo, DemoOptions, run_demo
from cryptocast.demo_report import summarise
from replay import FaultConfig
from tests.e2e_support import (
    TINY_MODEL,
    free_port_pair,
    interrupt,
    reaped,
    status_json,
    wait_for,
)
from tests.factories import make_prediction

pytestmark = pytest.mark.slow


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``/metrics`` as {sample name: {sorted labels: value}}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def total(metrics: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str) -> float:
    return sum(metrics.get(name, {}).values())


async def test_demo_reports_predictions_metrics_and_status(tmp_path: Path) -> None:
    port = free_port_pair(1)  # ingest serves metrics on port, the forecaster on port + 1
    opts = DemoOptions(
        out_dir=tmp_path / "demo",
        speed=180,
        predictions=10,
        timeout_s=75,
        metrics_port=port,
        profile={**TINY_MODEL, "CRYPTOCAST_SCHEDULE__STALE_AFTER": "60"},
        faults=FaultConfig(seed=3, drop_after=150, malformed_rate=0.03),
    )
    out = io.StringIO()
    seen: dict[str, object] = {}

    async def during(demo: Demo) -> None:
        ingest_needs = (
            "cryptocast_candles_ingested_total",
            "cryptocast_candles_rejected_total",
            "cryptocast_ws_reconnects_total",
            "cryptocast_gapfill_candles_total",
            "cryptocast_ingest_lag_seconds",
        )
        forecast_needs = (
            "cryptocast_predictions_published_total",
            "cryptocast_prediction_latency_seconds_count",
            "cryptocast_training_seconds",
            "cryptocast_model_age_candles",
            "cryptocast_live_mae",
            "cryptocast_events_pending",
            "cryptocast_trainings_total",
        )

        async def metrics_complete() -> bool:
            ingest, forecast = scrape(port), scrape(port + 1)
            seen.update(ingest=ingest, forecast=forecast)
            return all(n in ingest for n in ingest_needs) and all(
                n in forecast for n in forecast_needs
            )

        await wait_for(
            metrics_complete,
            30,
            "every ingest and forecaster metric to be reported",
            interval=0.5,
            on_fail=lambda: repr(
                {k: sorted(v) for k, v in seen.items() if isinstance(v, dict)}  # type: ignore[arg-type]
            ),
        )
        env = {**demo.env, "CRYPTOCAST_SCHEDULE__STALE_AFTER": "60"}
        proc = await status_json(env, timeout_s=30)
        seen["status_code"] = proc.returncode
        seen["status"] = orjson.loads(proc.stdout) if proc.stdout else proc.stderr.decode()

    # Bounded from inside, well below pytest's own timeout: on a slow machine the demo then
    # fails here and stops its processes in its own task, instead of being interrupted from
    # outside and leaving tasks behind for the session's event loop.
    async with asyncio.timeout(200):
        result = await run_demo(opts, Console(file=out, width=140), during)
        summaries, png, codes = result.summaries, result.png, result.codes
    text = out.getvalue()

    # metrics: every figure is there and counts what happened
    ingest, forecast = seen["ingest"], seen["forecast"]
    assert isinstance(ingest, dict) and isinstance(forecast, dict)
    assert total(ingest, "cryptocast_candles_ingested_total") >= 1000  # history + live
    assert total(ingest, "cryptocast_candles_rejected_total") > 0  # malformed were injected
    assert total(ingest, "cryptocast_ws_reconnects_total") > 0  # connections were dropped
    assert total(ingest, "cryptocast_gapfill_candles_total") >= 900  # the history fill at least
    lags = ingest["cryptocast_ingest_lag_seconds"].values()
    assert all(0 <= lag < 600 for lag in lags)  # replay-clock seconds: a few candles at most
    assert total(forecast, "cryptocast_predictions_published_total") >= 2
    assert total(forecast, "cryptocast_prediction_latency_seconds_count") >= 2
    assert all(v > 0 for v in forecast["cryptocast_training_seconds"].values())
    assert all(v >= 0 for v in forecast["cryptocast_live_mae"].values())
    assert total(forecast, "cryptocast_trainings_total") >= 1

    # status --json, from its own process, while the demo ran
    assert seen["status_code"] == 0, seen["status"]
    report = seen["status"]
    assert isinstance(report, dict)
    entries = {e["series"]: e for e in report["series"]}
    assert set(entries) == {s.key for s in opts.series}
    for e in entries.values():
        assert e["candles"] >= 1000
        assert e["last_candle_age_ms"] is not None and e["last_candle_age_ms"] < 60 * 60_000
        assert e["holes"] == []
        assert e["stale"] is False and e["stale_reasons"] == []
        assert e["model"] is not None, e
        assert e["model"]["version"].startswith("v") and isinstance(e["model"]["skill"], float)
        assert e["model"]["age_candles"] >= 0
        assert e["last_prediction"]["model"]["version"]
        assert 0 <= e["prediction_lag_candles"] <= 5
        assert e["last_prediction_age_ms"] is not None
        assert e["live_score"] is not None and e["live_score"]["n"] >= 1
        assert e["last_training"]["outcome"] in ("promoted", "kept_current")
        assert e["last_training"]["duration_s"] > 0

    # the demo's own output and products
    assert codes == {"ingest": 0, "forecast": 0}
    assert "promoted" in text and "live score over the demo" in text
    assert all(s.predictions >= 10 and s.scored >= 9 for s in summaries), summaries
    assert all(s.mae > 0 and s.naive_mae > 0 for s in summaries)
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000
    assert str(png) in text


def _p(as_of: int, last: float, pred: float, lo: float, hi: float) -> Prediction:
    return make_prediction(
        "binance:LINK/USDT:1m",
        as_of,
        last_close=last,
        predicted_close=pred,
        predicted_return=0.0,
        lower=lo,
        upper=hi,
        skill=0.0,
    )


def test_summary_by_hand() -> None:
    preds = [
        _p(0, 10.0, 11.0, 9.0, 12.0),  # actual 12: err 1, naive 2, covered, direction right
        _p(60_000, 12.0, 12.5, 12.4, 12.6),  # actual 11: err 1.5, naive 1, not covered, wrong
        _p(120_000, 11.0, 11.0, 10.0, 12.0),  # target never closed: not scored
    ]
    s = summarise(preds, {60_000: 12.0, 120_000: 11.0}, "binance:LINK/USDT:1m")
    assert (s.predictions, s.scored) == (3, 2)
    assert s.mae == pytest.approx(1.25) and s.naive_mae == pytest.approx(1.5)
    assert s.skill == pytest.approx(1 - 1.25 / 1.5)
    assert s.coverage == pytest.approx(0.5) and s.direction == pytest.approx(0.5)
    assert s.models == ["v1-x"]


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


async def test_ctrl_c_early_prints_what_was_seen_and_exits_130(tmp_path: Path) -> None:
    """Ctrl-C before any prediction: no NaN, no empty plot, a table of what was seen, exit 130;
    meanwhile a second terminal's `status` found the demo's Redis through its announcement."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOCAST_")}
    env |= {"CRYPTOCAST_DATA_DIR": str(tmp_path / "var"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    log = tmp_path / "demo.out"
    cmd = [sys.executable, "-m", "cryptocast", "demo", "--timeout", "120"]
    with reaped(_spawn(cmd, env, log)) as proc:

        async def started() -> bool:
            return "services started" in log.read_text()

        await wait_for(started, 60, "the demo's services", on_fail=log.read_text)
        status = await status_json(env)
        report = orjson.loads(status.stdout)
        assert "(cryptocast demo, pid" in report["redis"]
        assert [e["series"] for e in report["series"]] == [
            "binance:LINK/USDT:1m",
            "binance:LTC/USDT:1m",
        ]
        code = await interrupt(proc, 60)
    text = log.read_text()
    assert code == 130, text
    assert "live score over the demo" in text
    assert "nan" not in text.lower().replace("binance", "")
    assert "Traceback" not in text and "No artists with labels" not in text
    assert not (tmp_path / "var" / "instance.json").exists()
