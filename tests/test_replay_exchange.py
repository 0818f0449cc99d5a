"""The replay exchange over real loopback sockets: websocket streams, REST, ccxt, faults.

The futures dumps are relabelled as spot markets (LINKUSDT, LTCUSDT) here: the replay exchange
speaks the spot protocol, and these tests are about the protocol, not the prices.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from core.lifecycle import with_timeout
from ingest.csvfiles import CsvRow, read_csv
from replay import (
    FaultConfig,
    ReplayConfig,
    ReplayExchange,
    ReplaySource,
    run_replay_exchange,
)
from replay.faults import ConnectionFaults
from replay.protocol import fmt_num
from tests.market_data import market_file

ROWS = 1100  # 1000 candles of history before the default start, 100 to stream


def _slice(tmp_path: Path, name: str, rows: int = ROWS) -> Path:
    out = tmp_path / name
    with market_file(name).open() as src:
        out.write_text("".join(next(src) for _ in range(rows + 1)))
    return out


@pytest.fixture
def link_csv(tmp_path: Path) -> Path:
    return _slice(tmp_path, "linkusdt_binance_futures_1m_2026-02.csv")


@pytest.fixture
def ltc_csv(tmp_path: Path) -> Path:
    return _slice(tmp_path, "ltcusdt_binance_futures_1m_2026-02.csv")


@asynccontextmanager
async def replay(*csvs: Path, **kw: Any) -> AsyncIterator[ReplayExchange]:
    kw.setdefault("speed", 600.0)
    kw.setdefault("exchange_info_symbols", "replayed")
    ex = ReplayExchange(ReplayConfig([ReplaySource(p) for p in csvs], **kw))
    await ex.start()
    try:
        yield ex
    finally:
        await ex.stop()


def _connect(url: str) -> connect:
    # Unbounded client queue: a test that stops reading must not stall the close handshake
    # behind messages websockets refuses to buffer (it would wait close_timeout, 10 s).
    return connect(url, max_queue=None)


def _csv_rows(path: Path) -> dict[int, CsvRow]:
    return {r.candle.open_time: r for r in read_csv(path).rows if r.candle}


async def _recv(ws: ClientConnection, wait: float = 5.0) -> Any:
    return orjson.loads(await with_timeout(ws.recv(), wait))


async def _until(cond: Callable[[], bool | Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while True:
        res = cond()
        if not isinstance(res, bool):
            res = await res
        if res:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


def _assert_final_matches(k: dict[str, Any], row: CsvRow) -> None:
    c = row.candle
    assert c is not None
    assert k["x"] is True and k["t"] == c.open_time and k["T"] == row.close_time
    for key, value in (("o", c.open), ("h", c.high), ("l", c.low), ("c", c.close)):
        assert isinstance(k[key], str) and float(k[key]) == value
    assert float(k["v"]) == c.volume and k["n"] == c.trades
    assert float(k["q"]) == row.quote_volume and float(k["V"]) == row.taker_buy_volume
    assert float(k["Q"]) == row.taker_buy_quote_volume
    assert k["L"] - k["f"] + 1 == c.trades


async def test_kline_stream_partials_then_exact_final(link_csv: Path) -> None:
    rows = _csv_rows(link_csv)
    by_candle: dict[int, list[dict[str, Any]]] = {}
    finals: list[int] = []
    async with (
        replay(link_csv, updates_per_candle=3) as ex,
        _connect(f"{ex.ws_url}/linkusdt@kline_1m") as ws,
    ):
        while len(finals) < 4:
            msg = await _recv(ws)
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
        _assert_final_matches(final, rows[t])
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
        async with _connect(url) as ws:
            while min(finals.get("linkusdt@kline_1m", 0), finals.get("ltcusdt@kline_1m", 0)) < 2:
                msg = await _recv(ws)
                stream, data = msg["stream"], msg["data"]
                assert data["s"] == stream.split("@")[0].upper()
                if data["k"]["x"]:
                    finals[stream] = finals.get(stream, 0) + 1
        assert ex.stats.connections_accepted == 1


async def test_subscribe_list_unsubscribe_and_errors(link_csv: Path, ltc_csv: Path) -> None:
    async with replay(link_csv, ltc_csv) as ex, _connect(ex.ws_url) as ws:
        await ws.send(
            '{"method":"SUBSCRIBE","params":["btcusdt@kline_1m","ltcusdt@kline_1m"],"id":1}'
        )
        assert await _recv(ws) == {"result": None, "id": 1}
        msg = await _recv(ws)
        assert msg["e"] == "kline" and msg["s"] == "LTCUSDT"  # raw /ws: not wrapped
        await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":2}')
        while (msg := await _recv(ws)).get("id") != 2:
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
            msg = await _recv(ws)
            if "id" in msg:
                answers[msg["id"]] = msg
        assert answers[3] == {"result": None, "id": 3}
        assert answers[5] == {"result": True, "id": 5}
        assert answers[6]["error"]["code"] == 2 and answers[7]["error"]["code"] == 2
        assert answers[None]["error"]["code"] == 3
        await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":8}')
        while (msg := await _recv(ws)).get("id") != 8:
            assert "stream" not in msg, "data for an unsubscribed stream"
        assert msg["result"] == ["btcusdt@kline_1m"]


async def test_rest_klines_open_candle_last_and_paging(link_csv: Path) -> None:
    rows = _csv_rows(link_csv)
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

    rows = _csv_rows(link_csv)
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


async def test_fault_drop_after_n_messages(link_csv: Path) -> None:
    faults = FaultConfig(drop_after=5)
    async with replay(link_csv, faults=faults) as ex:
        for _ in range(2):
            received = 0
            async with _connect(f"{ex.ws_url}/linkusdt@kline_1m") as ws:
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await _recv(ws)
                        received += 1
            assert received == 5
            assert info.value.rcvd is None  # aborted: no close frame, as a network failure
        await _until(lambda: ex.stats.drops == 2)
        assert ex.stats.connections_accepted == 2


async def test_fault_stall_keeps_socket_open(link_csv: Path) -> None:
    faults = FaultConfig(stall_after=3, stall_seconds=0.6)
    async with replay(link_csv, faults=faults) as ex:
        async with _connect(f"{ex.ws_url}/linkusdt@kline_1m") as ws:
            stamps = []
            for _ in range(6):
                await _recv(ws)
                stamps.append(time.monotonic())
            gaps = [b - a for a, b in itertools.pairwise(stamps)]
            assert gaps[2] >= 0.5, gaps  # the stall, between the 3rd and 4th message
            assert max(gaps[:2]) < 0.3 and max(gaps[4:]) < 0.3
        assert ex.stats.stalls == 1 and ex.stats.drops == 0


def _malformed_kind(text: str | bytes) -> str | None:
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        return "broken_json"
    k = msg.get("k")
    if k is None or not {"t", "o", "h", "l", "c", "x"} <= set(k):
        return "missing_field"
    prices = [float(k[f]) for f in "ohlc"]
    if not all(math.isfinite(p) for p in prices):
        return "nan_price"
    if min(prices) <= 0:
        return "negative_price"
    if float(k["h"]) < float(k["l"]):
        return "high_low"
    if k["i"] != "1m":
        return "wrong_interval"
    if msg["s"] != "LINKUSDT" or k["s"] != "LINKUSDT":
        return "wrong_symbol"
    return None


async def test_fault_malformed_in_addition_to_good(link_csv: Path) -> None:
    rows = _csv_rows(link_csv)
    faults = FaultConfig(seed=7, malformed_rate=1.0)
    async with replay(link_csv, faults=faults, updates_per_candle=1) as ex:
        kinds: dict[str, int] = {}
        finals: list[dict[str, Any]] = []
        async with _connect(f"{ex.ws_url}/linkusdt@kline_1m") as ws:
            while len(kinds) < 7 or len(finals) < 8:
                text = await with_timeout(ws.recv(), 5)
                kind = _malformed_kind(text)
                if kind is not None:
                    kinds[kind] = kinds.get(kind, 0) + 1
                elif (k := orjson.loads(text)["k"])["x"]:
                    finals.append(k)
        assert set(kinds) == {
            "broken_json", "missing_field", "nan_price", "negative_price", "high_low",
            "wrong_interval", "wrong_symbol",
        }  # fmt: skip
        ts = [k["t"] for k in finals]
        assert ts == [ts[0] + 60_000 * i for i in range(len(ts))]  # no good final lost
        for k in finals:
            _assert_final_matches(k, rows[k["t"]])
        assert ex.stats.malformed_sent >= sum(kinds.values())


async def test_fault_duplicates_and_delays(link_csv: Path) -> None:
    async with replay(link_csv, faults=FaultConfig(duplicate_rate=1.0)) as ex:
        async with _connect(f"{ex.ws_url}/linkusdt@kline_1m") as ws:
            texts = [await with_timeout(ws.recv(), 5) for _ in range(6)]
        assert texts[0::2] == texts[1::2]
        assert ex.stats.duplicates_sent >= 3

    faults = FaultConfig(seed=3, delay_rate=0.3, delay_seconds=0.15)
    async with replay(link_csv, faults=faults) as ex:
        async with _connect(f"{ex.ws_url}/linkusdt@kline_1m") as ws:
            events = [(await _recv(ws))["E"] for _ in range(30)]
        assert any(b < a for a, b in itertools.pairwise(events)), "nothing overtaken"
        assert ex.stats.delayed > 0


def test_fault_schedule_is_deterministic() -> None:
    cfg = FaultConfig(seed=42, drop_after=100, drop_jitter=0.5, malformed_rate=0.3,
                      duplicate_rate=0.2, delay_rate=0.1, delay_seconds=0.1)  # fmt: skip
    a, b, other = ConnectionFaults(cfg, 0), ConnectionFaults(cfg, 0), ConnectionFaults(cfg, 1)
    assert [a.plan() for _ in range(200)] == [b.plan() for _ in range(200)]
    assert a.drop_at == b.drop_at and 50 <= (a.drop_at or 0) <= 150
    assert [a.plan() for _ in range(50)] != [other.plan() for _ in range(50)]


async def test_connection_lifetime_limit_on_replay_clock(link_csv: Path) -> None:
    # One replayed hour at 6000x is 0.6 s: a "24h-style" close, forced early.
    async with replay(link_csv, speed=6000.0, max_connection_seconds=3600) as ex:
        t0 = time.monotonic()
        async with _connect(f"{ex.ws_url}/linkusdt@kline_1m") as ws:
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await _recv(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        assert 0.4 < time.monotonic() - t0 < 3.0
        assert ex.stats.limit_closes == 1


async def test_server_pings_and_message_size_limit(link_csv: Path) -> None:
    async with (
        replay(link_csv, ping_interval=0.2, max_message_size=1024) as ex,
        aiohttp.ClientSession() as http,
    ):
        async with http.ws_connect(ex.ws_url, autoping=False) as ws:
            msg = await ws.receive(timeout=2)
            assert msg.type is aiohttp.WSMsgType.PING
            await ws.pong(msg.data)
        async with _connect(ex.ws_url) as ws2:
            await ws2.send("x" * 4096)
            with pytest.raises(ConnectionClosed) as info:
                await _recv(ws2)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_stream_goes_quiet_at_end_and_rest_keeps_serving(tmp_path: Path) -> None:
    csv = _slice(tmp_path, "nearusdt_binance_futures_1m_2026-02.csv", rows=1010)
    rows = _csv_rows(csv)
    last_open = max(rows)
    async with replay(csv, speed=6000.0) as ex:
        async with _connect(f"{ex.ws_url}/nearusdt@kline_1m") as ws:
            last_final = 0
            while last_final != last_open:
                k = (await _recv(ws))["k"]
                if k["x"]:
                    last_final = k["t"]
            with pytest.raises(TimeoutError):
                await _recv(ws, wait=0.3)
        async with aiohttp.ClientSession() as http:
            url = f"{ex.rest_url}/api/v3/klines?symbol=NEARUSDT&interval=1m&limit=2"
            async with http.get(url) as resp:
                page = orjson.loads(await resp.read())
        assert page[-1][0] == last_open and float(page[-1][4]) == rows[last_open].candle.close  # type: ignore[union-attr]


async def test_jump_to_emits_every_final(link_csv: Path) -> None:
    async with replay(link_csv, speed=1.0, start="2026-02-01T16:40:00Z") as ex:
        assert ex.now_ms() >= 1769964000000
        async with _connect(f"{ex.ws_url}/linkusdt@kline_1m") as ws:
            await _until(lambda: ex.stats.connections_open == 1)
            await asyncio.sleep(0.05)  # let the feed subscribe before the jump
            ex.jump_to(ex.now_ms() + 5 * 60_000)
            finals: list[int] = []
            while len(finals) < 5:
                k = (await _recv(ws))["k"]
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

        await _until(answers)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not await answers()
