"""The replay exchange's fault injection over real loopback sockets: dropped connections,
stalls, malformed, duplicated and delayed messages, connection lifetime limits.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from core.lifecycle import with_timeout
from replay import (
    FaultConfig,
)
from replay.faults import ConnectionFaults
from tests.replay.support import (
    assert_final_matches,
    csv_rows,
    recv,
    replay,
    until,
    ws_client,
)


async def test_fault_drop_after_n_messages(link_csv: Path) -> None:
    faults = FaultConfig(drop_after=5)
    async with replay(link_csv, faults=faults) as ex:
        for _ in range(2):
            received = 0
            async with ws_client(f"{ex.ws_url}/linkusdt@kline_1m") as ws:
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await recv(ws)
                        received += 1
            assert received == 5
            assert info.value.rcvd is None  # aborted: no close frame, as a network failure
        await until(lambda: ex.stats.drops == 2)
        assert ex.stats.connections_accepted == 2


async def test_fault_stall_keeps_socket_open(link_csv: Path) -> None:
    faults = FaultConfig(stall_after=3, stall_seconds=0.6)
    async with replay(link_csv, faults=faults) as ex:
        async with ws_client(f"{ex.ws_url}/linkusdt@kline_1m") as ws:
            stamps = []
            for _ in range(6):
                await recv(ws)
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
    rows = csv_rows(link_csv)
    faults = FaultConfig(seed=7, malformed_rate=1.0)
    async with replay(link_csv, faults=faults, updates_per_candle=1) as ex:
        kinds: dict[str, int] = {}
        finals: list[dict[str, Any]] = []
        async with ws_client(f"{ex.ws_url}/linkusdt@kline_1m") as ws:
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
            assert_final_matches(k, rows[k["t"]])
        assert ex.stats.malformed_sent >= sum(kinds.values())


async def test_fault_duplicates_and_delays(link_csv: Path) -> None:
    async with replay(link_csv, faults=FaultConfig(duplicate_rate=1.0)) as ex:
        async with ws_client(f"{ex.ws_url}/linkusdt@kline_1m") as ws:
            texts = [await with_timeout(ws.recv(), 5) for _ in range(6)]
        assert texts[0::2] == texts[1::2]
        assert ex.stats.duplicates_sent >= 3

    faults = FaultConfig(seed=3, delay_rate=0.3, delay_seconds=0.15)
    async with replay(link_csv, faults=faults) as ex:
        async with ws_client(f"{ex.ws_url}/linkusdt@kline_1m") as ws:
            events = [(await recv(ws))["E"] for _ in range(30)]
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
        async with ws_client(f"{ex.ws_url}/linkusdt@kline_1m") as ws:
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await recv(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        assert 0.4 < time.monotonic() - t0 < 3.0
        assert ex.stats.limit_closes == 1
