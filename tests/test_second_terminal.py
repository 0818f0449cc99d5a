"""What a second terminal's `status`/`watch` see next to a running `up` or `demo`: the instance
announcement (which Redis, which series), the shared exchange clock, and tables that never cut a
series name."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from core.clock import ClockSync, ExchangeClock, WallClock, shared_clock
from cryptocast.instance import Instance, announced, instance_overrides, read_instance
from cryptocast.views import fmt_skill, print_status
from storage.client import Redis
from storage.keys import Keys


def _instance(pid: int, url: str = "redis://:hunter2@127.0.0.1:6380/0") -> Instance:
    return Instance(
        owner="demo",
        pid=pid,
        redis_url=url,
        series=["binance:LINK/USDT:1m", "binance:LTC/USDT:1m"],
        clock="exchange",
        key_prefix="cryptocast",
    )


def test_announcement_is_private_and_removed(tmp_path: Path) -> None:
    with announced(tmp_path, _instance(os.getpid())) as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the URL may carry a password
        inst = read_instance(tmp_path)
        assert inst is not None and inst.series[1] == "binance:LTC/USDT:1m"
        assert "hunter2" not in inst.describe() and "(cryptocast demo, pid" in inst.describe()
    assert not path.exists()


def test_announcement_of_a_dead_process_is_ignored(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    with announced(tmp_path, _instance(int(proc.stdout))):
        assert read_instance(tmp_path) is None


def test_what_the_user_set_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("CRYPTOCAST_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("CRYPTOCAST_SERIES", "binance:BTC/USDT:1h")
    toml = tmp_path / "c.toml"
    toml.write_text('key_prefix = "mine"\n')
    with announced(tmp_path, _instance(os.getpid())):
        taken, inst = instance_overrides(tmp_path, str(toml), {"clock": "wall"})
    assert taken == {"redis_url": "redis://:hunter2@127.0.0.1:6380/0"}
    assert inst is not None
    # with the Redis URL chosen by the user, the instance is not the one queried
    monkeypatch.setenv("CRYPTOCAST_REDIS_URL", "redis://127.0.0.1:1/0")
    with announced(tmp_path, _instance(os.getpid())):
        taken, inst = instance_overrides(tmp_path, None, {})
    assert "redis_url" not in taken and inst is None


async def test_status_uses_the_exchange_clock_ingest_published(redis: Redis) -> None:
    key = Keys().clock()
    assert isinstance(await shared_clock(redis, key, "wall"), WallClock)
    replay_ms = 1_769_990_400_000  # 2026-02-02: a replay of February, read in December
    await redis.set(key, ClockSync(replay_ms, WallClock().now_ms(), speed=60).to_json())
    clock = await shared_clock(redis, key, "wall")
    assert isinstance(clock, ExchangeClock)
    assert abs(clock.now_ms() - replay_ms) < 3_600_000


def _status_row(
    series: str, rel: float | None, n: int = 50, field: str = "relative_mae"
) -> dict[str, object]:
    return {
        "series": series,
        "candles": 1000,
        "last_open_time": 1_769_990_400_000,
        "last_candle_age_ms": 1000,
        "holes": [],
        "model": {"version": "v12-20260202T000000", "skill": 0.0031},
        "last_prediction": None,
        "live_score": None if rel is None else {field: rel, "n": n},
        "stale": False,
        "stale_reasons": [],
        "degraded": rel is not None and rel > 1,
        "degraded_reasons": []
        if rel is None or rel <= 1
        else [f"live MAE / naive MAE {rel:.3f} > 1"],
    }


@pytest.mark.parametrize("width", [80, 120])
def test_status_table_never_cuts_a_series_name(width: int) -> None:
    rows = [
        _status_row("binanceusdm:LINK/USDT:USDT:1m", 1.003),
        _status_row("binanceusdm:LTC/USDT:USDT:1m", 0.99, field="mase"),  # an older forecaster's
    ]
    out = io.StringIO()
    print_status(rows, Console(file=out, width=width), redis="redis://127.0.0.1:6380/0")  # type: ignore[arg-type]
    text = out.getvalue()
    for r in rows:
        assert r["series"] in text
    assert "degraded" in text and "Redis: redis://127.0.0.1:6380/0" in text
    if width == 80:  # columns give way, and the caption says so
        assert "hidden" in text
    else:
        assert "+0.31%" in text  # skill in percent, as everywhere
        assert "1.003" in text and "0.990" in text  # the live MAE / naive MAE, either name


def test_skill_has_one_unit() -> None:
    assert fmt_skill(0.003) == "+0.30%"
    assert fmt_skill(-0.0028) == "-0.28%"
    assert fmt_skill(None) == "-" and fmt_skill(float("nan")) == "-"
