"""``cryptocast backfill --source csv`` on the real BTC/USDT 1h file, through the CLI."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from core.series import SeriesId
from cryptocast.cli import app
from cryptocast.redis_server import RedisServer
from storage.candles import CandleStore
from storage.client import Redis
from storage.keys import Keys
from tests.market_data import market_file

BTC_1H = market_file("btcusdt_binance_1h.csv")
SERIES = "binance:BTC/USDT:1h"
HALT = 1679662800000  # 2023-03-24 13:00 UTC: Binance halted spot trading


def backfill(redis_server: RedisServer, *args: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOCAST_")}
    env["CRYPTOCAST_REDIS_URL"] = redis_server.url
    result = CliRunner().invoke(app, ["backfill", "--json", *args], env=env)
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)  # type: ignore[no-any-return]


async def test_csv_backfill_is_idempotent_and_reports_the_real_hole(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    # the CLI runs its own event loop: call it from a thread
    first = await asyncio.to_thread(
        backfill, redis_server, "--source", "csv", "--file", str(BTC_1H), "--series", SERIES
    )
    assert first["stored"] == 27083 and first["rejected"] == {} and first["replaced"] == 0
    assert first["holes"] == [{"first": HALT, "last": HALT, "count": 1}]
    assert {"series", "stored", "skipped", "rejected", "holes", "seconds"} <= first.keys()

    again = await asyncio.to_thread(
        backfill,
        redis_server,
        "--source",
        "csv",
        "--file",
        str(BTC_1H),
        "--series",
        SERIES,
        "--since",
        "2020-01-01",
    )
    assert (again["stored"], again["replaced"], again["skipped"]) == (0, 0, 27083)

    # one altered row → exactly that candle replaced
    altered = tmp_path / "altered.csv"
    lines = BTC_1H.read_text().splitlines(keepends=True)
    row = lines[1000].split(",")
    assert row[2].startswith("2023-02-11 15:00")
    row[6] = f"{float(row[6]) + 1.5:.2f}"  # close, still within high/low? keep it valid:
    row[4] = f"{max(float(row[4]), float(row[6])):.2f}"  # high ≥ close
    lines[1000] = ",".join(row)
    altered.write_text("".join(lines))
    third = await asyncio.to_thread(
        backfill, redis_server, "--source", "csv", "--file", str(altered), "--series", SERIES
    )
    assert (third["stored"], third["replaced"], third["skipped"]) == (0, 1, 27082)
    store = CandleStore(redis, Keys())
    s = SeriesId.parse(SERIES)
    got = await store.get(s, 1676127600000)
    assert got is not None and got.close == pytest.approx(float(row[6]))
    assert await store.count(s) == 27083


def test_bad_rows_are_counted_per_reason_and_nothing_bad_is_stored(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    src = market_file("linkusdt_binance_futures_1m_2026-02.csv")
    lines = src.read_text().splitlines(keepends=True)[:101]  # header + 100 rows
    bad = lines[:]
    bad[5] = bad[5].replace(bad[5].split(",")[2], "nan", 1)  # high = NaN
    cols = bad[9].split(",")
    cols[3] = str(float(cols[2]) + 1)  # low above high
    bad[9] = ",".join(cols)
    bad[12] = "garbage,row\n"
    f = tmp_path / "link.csv"
    f.write_text("".join(bad))
    shutil.copy(f, tmp_path / "copy.csv")
    rep = backfill(
        redis_server,
        "--source",
        "csv",
        "--file",
        str(f),
        "--series",
        "binanceusdm:LINK/USDT:USDT:1m",
    )
    assert rep["stored"] == 97
    assert sum(rep["rejected"].values()) == 3  # type: ignore[attr-defined]
    assert rep["rejected"]["high_low"] == 1  # type: ignore[index]
    # the rejected rows leave holes, and the report names them
    assert sum(h["count"] for h in rep["holes"]) == 3  # type: ignore[attr-defined]


def test_backfill_usage_errors_are_one_line(redis_server: RedisServer) -> None:
    env = {"CRYPTOCAST_REDIS_URL": redis_server.url}
    r = CliRunner().invoke(app, ["backfill", "--source", "csv", "--series", SERIES], env=env)
    assert r.exit_code == 2 and "--source csv needs --file" in r.output
    r = CliRunner().invoke(
        app,
        ["backfill", "--source", "csv", "--file", str(BTC_1H), "--series", "binance:BTC/USDT:1m"],
        env=env,
    )
    assert r.exit_code == 2 and "holds 1h candles" in r.output
    r = CliRunner().invoke(
        app, ["backfill", "--source", "csv", "--file", "/nope.csv", "--series", SERIES], env=env
    )
    assert r.exit_code == 2 and "nope.csv" in r.output and "Traceback" not in r.output
