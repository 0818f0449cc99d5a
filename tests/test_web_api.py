"""The read-only web API against a real redis-server and a real uvicorn on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import math
import subprocess
import sys
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from config.settings import Settings, SettingsError, load_settings
from core.lifecycle import with_timeout
from core.schemas import Candle, Prediction
from core.series import SeriesId
from cryptocast.redis_server import RedisServer
from storage.candles import CandleStore
from storage.client import Redis
from storage.keys import Keys
from storage.paths import PathStore
from storage.predictions import PredictionBus
from tests.web_support import forecast_path, prediction, serve
from web.app import check_exposure, is_loopback
from web.stream import StreamOverflow, Subscription

BTC = "binance:BTC/USDT:1m"
ETH = "binance:ETH/USDT:1m"
FUT = "binanceusdm:LINK/USDT:USDT:1m"
T0 = 1_700_000_040_000  # a 1m open time
MIN = 60_000


def web_settings(redis_server: RedisServer, **web: Any) -> Settings:
    return load_settings(
        redis_url=redis_server.url,
        series=[BTC, ETH, FUT],
        web={"status_cache_s": 0, **web},
    )


def path(series: str, suffix: str, encode: bool = True) -> str:
    return f"/api/series/{quote(series, safe=':') if encode else series}/{suffix}"


def candles(n: int, start: int = T0) -> list[Candle]:
    out = []
    for i in range(n):
        c = 100.0 + math.sin(i / 5)
        out.append(Candle(start + i * MIN, c, c + 0.5, c - 0.5, c + 0.1, 10.0 + i, 5))
    return out


async def test_series_docs_and_health(redis: Redis, redis_server: RedisServer) -> None:
    async with serve(web_settings(redis_server), redis) as base, httpx.AsyncClient() as http:
        r = await http.get(base + "/api/series")
        assert r.status_code == 200
        assert [s["series"] for s in r.json()] == [BTC, ETH, FUT]
        assert r.json()[2] == {
            "series": FUT,
            "exchange": "binanceusdm",
            "symbol": "LINK/USDT:USDT",
            "timeframe": "1m",
            "path": "binanceusdm:LINK%2FUSDT:USDT:1m",
        }
        spec = (await http.get(base + "/openapi.json")).json()
        for p in (
            "/api/series",
            "/api/series/{series}/candles",
            "/api/series/{series}/predictions",
            "/api/series/{series}/latest",
            "/api/series/{series}/forecast",
            "/api/status",
            "/healthz",
        ):
            assert p in spec["paths"], p
        assert "Prediction" in spec["components"]["schemas"]
        assert (await http.get(base + "/docs")).status_code == 200
        h = await http.get(base + "/healthz")
        assert h.status_code == 200 and h.json()["ok"] is True
        page = await http.get(base + "/")
        assert page.status_code == 200 and "lightweight-charts" in page.text
        js = await http.get(base + "/static/vendor/lightweight-charts.standalone.production.js")
        assert js.status_code == 200 and "createChart" in js.text
        assert (await http.post(base + "/api/series")).status_code == 405  # read-only


async def test_candles_newest_paging_and_limits(redis: Redis, redis_server: RedisServer) -> None:
    store = CandleStore(redis, Keys())
    stored = candles(300)
    await store.upsert(SeriesId.parse(BTC), stored)
    async with serve(web_settings(redis_server), redis) as base, httpx.AsyncClient() as http:
        r = await http.get(base + path(BTC, "candles"), params={"limit": 50})
        assert r.status_code == 200
        body = r.json()
        assert [c["open_time"] for c in body["candles"]] == [c.open_time for c in stored[-50:]]
        assert body["candles"][-1]["close"] == stored[-1].close
        # the symbol's slash sent raw names the same series
        raw = await http.get(base + path(BTC, "candles", encode=False), params={"limit": 50})
        assert raw.json() == body
        # paging from since until next_since runs out: every candle exactly once
        seen: list[int] = []
        since: int | None = T0 - 30_000  # not aligned: starts at the next open time
        while since is not None:
            page = (
                await http.get(base + path(BTC, "candles"), params={"since": since, "limit": 128})
            ).json()
            seen += [c["open_time"] for c in page["candles"]]
            since = page["next_since"]
        assert seen == [c.open_time for c in stored]
        for bad in ({"limit": 5001}, {"limit": 0}, {"since": -1}, {"limit": "x"}):
            r = await http.get(base + path(BTC, "candles"), params=bad)
            assert r.status_code == 422, bad
        empty = await http.get(base + path(ETH, "candles"))
        assert empty.status_code == 200 and empty.json()["candles"] == []


async def test_bad_and_unknown_series(redis: Redis, redis_server: RedisServer) -> None:
    async with serve(web_settings(redis_server), redis) as base, httpx.AsyncClient() as http:
        for bad in ("nonsense", "BINANCE:BTC/USDT:1m", "binance:BTC/USDT:7m", "binance::1m"):
            r = await http.get(base + path(bad, "latest"))
            assert r.status_code == 400, (bad, r.text)
            assert "series" in r.json()["detail"]
        r = await http.get(base + path("binance:DOGE/USDT:1m", "candles"))
        assert r.status_code == 404 and "not served" in r.json()["detail"]
        r = await http.get(base + path(FUT, "candles"))  # a colon inside the symbol is fine
        assert r.status_code == 200


async def test_predictions_latest_and_status(redis: Redis, redis_server: RedisServer) -> None:
    bus = PredictionBus(redis, Keys())
    published = [prediction(BTC, T0 + i * MIN) for i in range(30)]
    for p in published:
        assert await bus.publish(p, scores={"mae": 0.5, "naive_mae": 0.6, "mase": 0.83, "n": 30})
    await CandleStore(redis, Keys()).upsert(SeriesId.parse(BTC), candles(31))
    async with serve(web_settings(redis_server), redis) as base, httpx.AsyncClient() as http:
        r = await http.get(base + path(BTC, "predictions"), params={"limit": 10})
        assert r.status_code == 200
        got = [Prediction.model_validate(p) for p in r.json()["predictions"]]
        assert got == published[-10:]
        r = await http.get(
            base + path(BTC, "predictions"), params={"since": published[4].id, "limit": 20}
        )
        body = r.json()
        assert [p["id"] for p in body["predictions"]] == [p.id for p in published[5:25]]
        assert body["next_since"] == published[24].id
        assert r.json()["predictions"][0]["schema"] == 2  # the channel's field names
        r = await http.get(base + path(BTC, "predictions"), params={"since": published[24].id})
        assert [p["id"] for p in r.json()["predictions"]] == [p.id for p in published[25:]]
        assert r.json()["next_since"] is None
        for bad in ({"since": "yesterday"}, {"since": "1-2-3"}, {"limit": 5001}):
            r = await http.get(base + path(BTC, "predictions"), params=bad)
            assert r.status_code == 422, bad
        latest = await http.get(base + path(BTC, "latest"))
        assert latest.status_code == 200
        assert orjson.loads(latest.content) == orjson.loads(published[-1].to_json())
        none = await http.get(base + path(ETH, "latest"))
        assert none.status_code == 404 and "no prediction" in none.json()["detail"]
        st = (await http.get(base + "/api/status")).json()
        assert [s["series"] for s in st["series"]] == [BTC, ETH, FUT]
        btc, eth = st["series"][0], st["series"][1]
        assert btc["candles"] == 31 and btc["last_prediction"]["id"] == published[-1].id
        assert btc["live_score"]["mase"] == pytest.approx(0.83)
        assert btc["stale"] is True  # the candles are from 2023 by the wall clock
        assert eth["stale"] is True and "no candles" in eth["stale_reasons"]
        assert st["stream_clients"] == 0


async def test_forecast_slices_the_stored_path(redis: Redis, redis_server: RedisServer) -> None:
    """The web answers from the path the forecaster stores (it computes nothing): ``steps``
    and ``until`` cut the same path; beyond what is stored is a 422 naming the setting."""
    series = SeriesId.parse(BTC)
    store = PathStore(redis, Keys())
    async with serve(web_settings(redis_server), redis) as base, httpx.AsyncClient() as http:
        url = base + path(BTC, "forecast")
        r = await http.get(url, params={"steps": 5})
        assert r.status_code == 409 and "no forecast" in r.json()["detail"]
        stored = forecast_path(BTC, T0, 240)
        await store.write(stored)
        assert await store.read(series) == stored
        r = await http.get(url, params={"steps": 24})
        assert r.status_code == 200, r.text
        fc = r.json()
        assert fc["series"] == BTC and fc["as_of"] == T0 and fc["steps"] == 24
        assert fc["last_close"] == stored.last_close and fc["interval_level"] == 0.9
        assert fc["model"] == {
            "version": "v1-test",
            "kind": "lstm",
            "trained_at": T0 - 3_600_000,
            "skill": 0.02,
        }
        assert fc["points"] == [p.model_dump() for p in stored.points[:24]]
        assert len((await http.get(url)).json()["points"]) == 60  # the default
        until = T0 + 10 * MIN
        r = await http.get(url, params={"until": until + 30_000})  # inside the 10th candle
        assert r.status_code == 200 and r.json()["steps"] == 10
        assert r.json()["points"] == fc["points"][:10]
        assert r.json()["points"][-1]["time"] == until
        assert (await http.get(url, params={"steps": 240})).json()["steps"] == 240
        for bad, why in (
            ({"steps": 241}, "at most 240"),
            ({"until": T0 + 241 * MIN}, "1..240 candles after"),
            ({"until": T0}, "1..240 candles after"),
            ({"steps": 5, "until": until}, "not both"),
        ):
            r = await http.get(url, params=bad)
            assert r.status_code == 422 and why in r.json()["detail"], (bad, r.text)
        for bad in ({"steps": 1001}, {"steps": 0}, {"until": -1}):
            assert (await http.get(url, params=bad)).status_code == 422, bad
        # a value this version cannot read is no forecast, not a 500
        await redis.set(Keys().forecast_path(series), b'{"schema": 99}')
        assert (await http.get(url)).status_code == 409


def test_token_required_beyond_localhost(redis_server: RedisServer) -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        assert not is_loopback(host), host
    plain = web_settings(redis_server)
    check_exposure("127.0.0.1", plain)
    with pytest.raises(SettingsError, match="CRYPTOCAST_WEB__TOKEN"):
        check_exposure("0.0.0.0", plain)
    check_exposure("0.0.0.0", web_settings(redis_server, token="s3cret"))
    # the command refuses to start, one line naming the setting, before touching Redis
    env = {"CRYPTOCAST_WEB__HOST": "0.0.0.0", "CRYPTOCAST_REDIS_URL": "redis://127.0.0.1:1/0"}
    proc = subprocess.run(
        [sys.executable, "-m", "cryptocast", "web"],
        check=False,
        env={**_clean_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "CRYPTOCAST_WEB__TOKEN" in lines[0], proc.stderr


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOCAST_")}


async def test_token_guards_api_and_stream(redis: Redis, redis_server: RedisServer) -> None:
    settings = web_settings(redis_server, token="s3cret")
    await PredictionBus(redis, Keys()).publish(prediction(BTC, T0))
    async with serve(settings, redis) as base, httpx.AsyncClient() as http:
        assert (await http.get(base + "/api/series")).status_code == 401
        wrong = await http.get(base + "/api/series", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        ok = await http.get(base + "/api/series", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert (await http.get(base + path(BTC, "latest"))).status_code == 401
        assert (await http.get(base + "/healthz")).status_code == 200  # healthchecks need none
        ws_base = base.replace("http", "ws") + "/api/stream"
        async with ws_connect(f"{ws_base}?since=0") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await with_timeout(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        async with ws_connect(f"{ws_base}?since=0&token=s3cret&series={quote(BTC)}") as ws:
            got = Prediction.from_json(await with_timeout(ws.recv(), 5))
            assert got.id == f"{T0}-0"
        headers = {"Authorization": "Bearer s3cret"}
        async with ws_connect(f"{ws_base}?since=0", additional_headers=headers) as ws:
            assert Prediction.from_json(await with_timeout(ws.recv(), 5)).as_of == T0


async def test_stream_rejects_bad_requests(redis: Redis, redis_server: RedisServer) -> None:
    async with serve(web_settings(redis_server), redis) as base:
        ws_base = base.replace("http", "ws") + "/api/stream"
        for query, code in (
            ("series=nonsense", 4400),
            (f"series={quote('binance:DOGE/USDT:1m')}", 4404),
            ("since=yesterday", 4400),
        ):
            async with ws_connect(f"{ws_base}?{query}") as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await with_timeout(ws.recv(), 5)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == code, query


async def _read_some(ws: ClientConnection, n: int, out: list[Prediction]) -> None:
    for _ in range(n):
        out.append(Prediction.from_json(await with_timeout(ws.recv(), 10)))


async def test_stream_resumes_after_forced_disconnects_without_loss_or_repeat(
    redis: Redis, redis_server: RedisServer
) -> None:
    """A publisher runs throughout; the client is cut off (TCP abort, no close handshake) four
    times and reconnects with ``since`` = the last id it got; meanwhile the hub's own pub/sub
    connection is killed too. The client ends with every prediction exactly once, in order."""
    bus = PredictionBus(redis, Keys())
    total = 400
    published: list[Prediction] = []
    backlog = [prediction(BTC, T0 + i * MIN) for i in range(40)]
    for p in backlog:  # published before the client ever connects
        assert await bus.publish(p)
    published += backlog

    async def publisher() -> None:
        for i in range(len(backlog), total):
            p = prediction(BTC, T0 + i * MIN)
            assert await bus.publish(p)
            published.append(p)
            # the other series' messages must not leak into a BTC-only stream
            await bus.publish(prediction(ETH, T0 + i * MIN))
            await asyncio.sleep(0.004)

    received: list[Prediction] = []
    async with serve(web_settings(redis_server), redis) as base:
        url = base.replace("http", "ws") + f"/api/stream?series={quote(BTC)}"
        pub = asyncio.create_task(publisher())
        try:
            since = f"{T0 - MIN}-0"  # before the first: the whole backlog is replayed
            for round_ in range(5):
                ws = await ws_connect(f"{url}&since={since}")
                if round_ < 4:
                    await _read_some(ws, 45, received)
                    assert ws.transport is not None
                    ws.transport.abort()  # the network drops: no close frame
                    with contextlib.suppress(Exception):
                        await ws.close()
                    if round_ == 1:
                        # the hub's shared subscription dies too; the stream fills the gap
                        killed = await redis.client_kill_filter(_type="pubsub")
                        assert killed >= 1
                    await asyncio.sleep(0.05)  # messages keep coming while we are away
                    since = received[-1].id
                else:
                    await pub
                    while len(received) < total:
                        await _read_some(ws, 1, received)
                    with pytest.raises(TimeoutError):  # and nothing after the last one
                        await with_timeout(ws.recv(), 0.5)
                    await ws.close()
        finally:
            pub.cancel()
            await asyncio.gather(pub, return_exceptions=True)
    assert len(published) == total
    assert [p.id for p in received] == [p.id for p in published]
    assert {p.series.key for p in received} == {BTC}
    assert received == published  # whole messages, not just ids


async def test_live_stream_survives_hub_disconnect_without_reconnecting(
    redis: Redis, redis_server: RedisServer
) -> None:
    bus = PredictionBus(redis, Keys())
    async with serve(web_settings(redis_server), redis) as base:
        url = base.replace("http", "ws") + "/api/stream"  # every series, live only
        async with ws_connect(url) as ws:
            await asyncio.sleep(0.1)  # the session registers with the hub
            sent = []
            for i in range(30):
                if i == 10:
                    await redis.client_kill_filter(_type="pubsub")
                p = prediction(ETH if i % 2 else BTC, T0 + i * MIN)
                assert await bus.publish(p)
                sent.append(p)
            got: list[Prediction] = []
            await _read_some(ws, 30, got)
    by_series = {k: [p.id for p in got if p.series.key == k] for k in (BTC, ETH)}
    assert by_series == {k: [p.id for p in sent if p.series.key == k] for k in (BTC, ETH)}


async def test_slow_client_queue_overflows_instead_of_growing() -> None:
    sub = Subscription([BTC], limit=3)
    for i in range(3):
        sub.push(prediction(BTC, T0 + i * MIN))
    assert (await sub.get()).as_of == T0
    sub.push(prediction(BTC, T0 + 3 * MIN))
    sub.push(prediction(BTC, T0 + 4 * MIN))  # one too many
    with pytest.raises(StreamOverflow):
        await sub.get()
