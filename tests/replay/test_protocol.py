"""The replay exchange over real loopback sockets: websocket streams, REST, ccxt, pings, the
end of the data and the command that runs it.

The futures dumps are relabelled as spot markets (LINKUSDT, LTCUSDT) here: the replay exchange
speaks the spot protocol, and these tests are about the protocol, not the prices.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from replay import (
    ReplayConfig,
    ReplaySource,
    run_replay_exchange,
)
from replay.protocol import fmt_num
from tests.replay.support import (
    assert_final_matches,
    csv_rows,
    recv,
    replay,
    slice_csv,
    until,
    ws_client,
)


async def test_kline_stream_partials_then_exact_final(link_csv: Path) -> None:
    rows = csv_rows(link_csv)
    by_candle: dict[int, list[dict[str, Any]]] = {}
    finals: list[int] = []
    async with (
        replay(link_csv, updates_per_candle=3) as ex,
        ws_client(f"{ex.ws_url}/linkusdt@kline_1m") as ws,
    ):
        while len(finals) < 4:
            msg = await recv(ws)
            assert msg["e"] == "kline" and msg["s"] == "LINKUSDT"
            k = msg["k"]
            assert k["s"] == "LINKUSDT" and k["i"] == "1m" and k["B"] == "0"
            by_candle.setdefault(k["t"], []).append(k)
            if k["x"]:
                finals.append(k["t"])
    assert finals == [finals[0] + 60_000 * i for i in range(4)], "a final was skipped"
    for t in finals[1:]:  # the first candle may have been joined half-way
        seq = by_candle[t]
        assert [k["x"] for k in seq] == [False, False, False, True]
        final = seq[-1]
        assert_final_matches(final, rows[t])
        for prev, cur in itertools.pairwise(seq):
            assert float(prev["v"]) <= float(cur["v"]) and prev["n"] <= cur["n"]
        for k in seq[:-1]:
            assert k["o"] == final["o"]
            assert float(final["l"]) <= float(k["l"]) <= float(k["c"]) <= float(k["h"])
            assert float(k["o"]) <= float(k["h"]) <= float(final["h"])
            assert float(k["v"]) < float(final["v"])


async def test_combined_streams_two_symbols(link_csv: Path, ltc_csv: Path) -> None:
    async with replay(link_csv, ltc_csv) as ex:
        url = f"{ex.stream_url}?streams=linkusdt@kline_1m/ltcusdt@kline_1m"
        finals: dict[str, int] = {}
        async with ws_client(url) as ws:
            while min(finals.get("linkusdt@kline_1m", 0), finals.get("ltcusdt@kline_1m", 0)) < 2:
                msg = await recv(ws)
                stream, data = msg["stream"], msg["data"]
                assert data["s"] == stream.split("@")[0].upper()
                if data["k"]["x"]:
                    finals[stream] = finals.get(stream, 0) + 1
        assert ex.stats.connections_accepted == 1


async def test_subscribe_list_unsubscribe_and_errors(link_csv: Path, ltc_csv: Path) -> None:
    async with replay(link_csv, ltc_csv) as ex, ws_client(ex.ws_url) as ws:
        await ws.send(
            '{"method":"SUBSCRIBE","params":["btcusdt@kline_1m","ltcusdt@kline_1m"],"id":1}'
        )
        assert await recv(ws) == {"result": None, "id": 1}
        msg = await recv(ws)
        assert msg["e"] == "kline" and msg["s"] == "LTCUSDT"  # raw /ws: not wrapped
        await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":2}')
        while (msg := await recv(ws)).get("id") != 2:
            pass
        assert msg["result"] == ["btcusdt@kline_1m", "ltcusdt@kline_1m"]
        await ws.send('{"method":"UNSUBSCRIBE","params":["ltcusdt@kline_1m"],"id":3}')
        await ws.send('{"method":"SET_PROPERTY","params":["combined",true],"id":4}')
        await ws.send('{"method":"GET_PROPERTY","params":["combined"],"id":5}')
        await ws.send('{"method":"SUBSCRIBE","params":["not a stream"],"id":6}')
        await ws.send('{"method":"FLY","id":7}')
        await ws.send("{broken")
        answers: dict[Any, Any] = {}
        while len(answers) < 6:
            msg = await recv(ws)
            if "id" in msg:
                answers[msg["id"]] = msg
        assert answers[3] == {"result": None, "id": 3}
        assert answers[5] == {"result": True, "id": 5}
        assert answers[6]["error"]["code"] == 2 and answers[7]["error"]["code"] == 2
        assert answers[None]["error"]["code"] == 3
        await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":8}')
        while (msg := await recv(ws)).get("id") != 8:
            assert "stream" not in msg, "data for an unsubscribed stream"
        assert msg["result"] == ["btcusdt@kline_1m"]


async def test_rest_klines_open_candle_last_and_paging(link_csv: Path) -> None:
    rows = csv_rows(link_csv)
    first_open = min(rows)
    async with replay(link_csv) as ex, aiohttp.ClientSession() as http:

        async def get(path: str, **params: Any) -> tuple[int, Any]:
            async with http.get(ex.rest_url + path, params=params) as resp:
                return resp.status, orjson.loads(await resp.read())

        status, body = await get("/api/v3/time")
        assert status == 200 and body["speed"] == 600.0
        status, latest = await get("/api/v3/klines", symbol="LINKUSDT", interval="1m")
        _, now_body = await get("/api/v3/time")
        assert status == 200 and len(latest) == 500
        assert latest[-1][0] <= now_body["serverTime"] <= latest[-1][6] + 1_000  # open last
        assert all(isinstance(v, str) for v in latest[-1][1:6])
        assert [r[0] for r in latest] == [latest[0][0] + 60_000 * i for i in range(500)]

        # Page from the first candle to now with startTime, as a gap fill does.
        got: list[list[Any]] = []
        start = first_open
        while True:
            status, page = await get(
                "/api/v3/klines", symbol="LINKUSDT", interval="1m", startTime=start, limit=400
            )
            assert status == 200
            if not page:
                break
            got.extend(page)
            start = page[-1][0] + 1
            if len(page) < 400:
                break
        assert len(got) >= 1000 and got[0][0] == first_open
        assert [r[0] for r in got] == [first_open + 60_000 * i for i in range(len(got))]
        for r in got[:-1]:
            c = rows[r[0]].candle
            assert c is not None
            assert (float(r[1]), float(r[2]), float(r[3]), float(r[4])) == (
                c.open,
                c.high,
                c.low,
                c.close,
            )
            assert float(r[5]) == c.volume and r[8] == c.trades

        status, end_page = await get(
            "/api/v3/klines",
            symbol="LINKUSDT",
            interval="1m",
            endTime=first_open + 59 * 60_000,
            limit=10,
        )
        assert [r[0] for r in end_page][-1] == first_open + 59 * 60_000 and len(end_page) == 10

        for params, code in (
            ({"symbol": "DOGEUSDT", "interval": "1m"}, -1121),
            ({"symbol": "LINKUSDT", "interval": "7m"}, -1120),
            ({"symbol": "LINKUSDT", "interval": "1m", "limit": 1001}, -1130),
            ({"symbol": "LINKUSDT", "interval": "1m", "startTime": "x"}, -1100),
            ({"interval": "1m"}, -1102),
        ):
            status, body = await get("/api/v3/klines", **params)
            assert status == 400 and body["code"] == code and body["msg"]
        assert body == {"code": -1102, "msg": body["msg"]}
        status, stats = await get("/_replay/stats")
        assert stats["rest_kline_calls"] == ex.stats.rest_kline_calls >= 9


async def test_ccxt_binance_loads_markets_and_pages(link_csv: Path) -> None:
    import ccxt.async_support as ccxt

    rows = csv_rows(link_csv)
    async with replay(link_csv, exchange_info_symbols="all") as ex:
        exchange = ccxt.binance(
            {
                "urls": {
                    "api": {
                        "public": f"{ex.rest_url}/api/v3",
                        "private": f"{ex.rest_url}/api/v3",
                        "v1": f"{ex.rest_url}/api/v1",
                    }
                },
                "options": {"fetchMarkets": {"types": ["spot"]}},
            }
        )
        try:
            markets = await exchange.load_markets()
            assert "LINK/USDT" in markets and markets["LINK/USDT"]["id"] == "LINKUSDT"
            assert ex.stats.rest_kline_calls == 0
            since, candles = min(rows), []
            while True:
                page = await exchange.fetch_ohlcv("LINK/USDT", "1m", since=since, limit=1000)
                candles.extend(page)
                if len(page) < 1000:
                    break
                since = page[-1][0] + 60_000
        finally:
            await exchange.close()
        assert ex.stats.rest_kline_calls == 2
        assert [c[0] for c in candles] == [min(rows) + 60_000 * i for i in range(len(candles))]
        for t, o, h, lo, cl, v in candles[:-1]:
            c = rows[t].candle
            assert c is not None and (o, h, lo, cl, v) == (c.open, c.high, c.low, c.close, c.volume)


async def test_ccxt_config_helper_and_exchange_info(link_csv: Path) -> None:
    import ccxt.async_support as ccxt

    async with replay(link_csv) as ex:
        exchange = ccxt.binance(ex.ccxt_config())
        try:
            markets = await exchange.load_markets()
        finally:
            await exchange.close()
        # Filtered to the replayed symbols plus BTCUSDT and ETHUSDT.
        assert {m["id"] for m in markets.values()} == {"LINKUSDT", "BTCUSDT", "ETHUSDT"}
        async with aiohttp.ClientSession() as http:
            url = f"{ex.rest_url}/api/v3/exchangeInfo?symbol=LINKUSDT"
            async with http.get(url) as resp:
                body = orjson.loads(await resp.read())
        assert [s["symbol"] for s in body["symbols"]] == ["LINKUSDT"]
        assert abs(body["serverTime"] - ex.now_ms()) < 60_000 * 10


async def test_server_pings_and_message_size_limit(link_csv: Path) -> None:
    async with (
        replay(link_csv, ping_interval=0.2, max_message_size=1024) as ex,
        aiohttp.ClientSession() as http,
    ):
        async with http.ws_connect(ex.ws_url, autoping=False) as ws:
            msg = await ws.receive(timeout=2)
            assert msg.type is aiohttp.WSMsgType.PING
            await ws.pong(msg.data)
        async with ws_client(ex.ws_url) as ws2:
            await ws2.send("x" * 4096)
            with pytest.raises(ConnectionClosed) as info:
                await recv(ws2)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_stream_goes_quiet_at_end_and_rest_keeps_serving(tmp_path: Path) -> None:
    csv = slice_csv(tmp_path, "nearusdt_binance_futures_1m_2026-02.csv", rows=1010)
    rows = csv_rows(csv)
    last_open = max(rows)
    async with replay(csv, speed=6000.0) as ex:
        async with ws_client(f"{ex.ws_url}/nearusdt@kline_1m") as ws:
            last_final = 0
            while last_final != last_open:
                k = (await recv(ws))["k"]
                if k["x"]:
                    last_final = k["t"]
            with pytest.raises(TimeoutError):
                await recv(ws, wait=0.3)
        async with aiohttp.ClientSession() as http:
            url = f"{ex.rest_url}/api/v3/klines?symbol=NEARUSDT&interval=1m&limit=2"
            async with http.get(url) as resp:
                page = orjson.loads(await resp.read())
        assert page[-1][0] == last_open and float(page[-1][4]) == rows[last_open].candle.close  # type: ignore[union-attr]


async def test_jump_to_emits_every_final(link_csv: Path) -> None:
    async with replay(link_csv, speed=1.0, start="2026-02-01T16:40:00Z") as ex:
        assert ex.now_ms() >= 1769964000000
        async with ws_client(f"{ex.ws_url}/linkusdt@kline_1m") as ws:
            await until(lambda: ex.stats.connections_open == 1)
            await asyncio.sleep(0.05)  # let the feed subscribe before the jump
            ex.jump_to(ex.now_ms() + 5 * 60_000)
            finals: list[int] = []
            while len(finals) < 5:
                k = (await recv(ws))["k"]
                if k["x"]:
                    finals.append(k["t"])
        assert finals == [1769964000000 + 60_000 * i for i in range(5)]


def test_number_format() -> None:
    assert fmt_num(16541.77) == "16541.77000000"
    assert fmt_num(0.1) == "0.10000000"
    assert float(fmt_num(1.23456789012)) == 1.23456789012


async def test_run_replay_exchange_serves_until_cancelled(link_csv: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ReplayConfig(
        [ReplaySource(link_csv, symbol="LINK/USDT:USDT", timeframe="1m")],
        port=port,
        speed=60.0,
        start="2026-02-01T12:00:00",
        exchange_info_symbols="replayed",
    )
    task = asyncio.create_task(run_replay_exchange(cfg))
    url = f"http://127.0.0.1:{port}/api/v3/time"
    async with aiohttp.ClientSession() as http:

        async def answers() -> bool:
            try:
                async with http.get(url) as resp:
                    body = orjson.loads(await resp.read())
            except aiohttp.ClientConnectionError:
                return False
            return bool(body["serverTime"] >= 1769947200000 and body["speed"] == 60.0)

        await until(answers)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not await answers()
