"""Schema-2 messages and live calibration through real workers against a real Redis.

The calibration state travels with each prediction (one Lua step), so a second worker that takes
the series over (a restart, or another replica) continues the very sequence one worker would
have produced; the level each message uses depends only on candles up to its ``as_of``.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import pytest
import structlog
import structlog.testing

from config.settings import load_settings
from core.schemas import Candle, Prediction
from core.series import SeriesId
from forecaster.calibration import AciState
from forecaster.econometric import FilterState, VarianceModel
from forecaster.features import log_returns
from forecaster.serving.worker import SeriesWorker, ServingContext
from storage.calibration import levels
from storage.client import Redis
from storage.facade import Storage
from storage.health import series_health
from storage.keys import Keys
from tests.forecaster_support import H1, btc_arrays, btc_candles, promote_trained, trained_tiny

SERIES = SeriesId.parse("binance:BTC/USDT:1h")
GAMMA = 0.05  # large, so every miss visibly moves the level
START, SPLIT, END = 2800, 2830, 2860


class FixedClock:
    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


async def _setup(redis: Redis, prefix: str, meta_change: dict[str, Any] | None = None) -> Storage:
    storage = Storage.build(redis, Keys(prefix))
    result = trained_tiny()
    registry = storage.registry
    meta = {**result.meta, "trained_at": 1, **(meta_change or {})}
    await promote_trained(registry, SERIES, result, **meta)
    store = storage.candles
    await store.upsert(SERIES, list(btc_candles(3000)[:START]))
    return storage


def _worker(storage: Storage, name: str):
    settings = load_settings(schedule={"stale_after": 10**6}, forecast={"calibration_gamma": GAMMA})
    ctx = ServingContext(
        settings=settings,
        storage=storage,
        clock=FixedClock(btc_candles(3000)[-1].open_time + 3_600_000),
        consumer=name,
    )
    return ctx, SeriesWorker(ctx, SERIES)


async def _feed(ctx: ServingContext, worker: SeriesWorker, candles: list[Candle]) -> None:
    await ctx.events.ensure_group(SERIES)
    await worker.holder.load_now()
    for c in candles:
        await ctx.store.upsert(SERIES, [c], emit_events=True, arrived_ms=int(time.time() * 1000))
        batch = await ctx.events.read(SERIES, ctx.consumer, block_ms=None)
        await worker.handle(batch)


async def _run(
    redis: Redis, prefix: str, split: bool, meta_change: dict[str, Any] | None = None
) -> tuple[list[Prediction], dict[str, Any] | None]:
    storage = await _setup(redis, prefix, meta_change)
    live = list(btc_candles(3000)[START:END])
    if split:
        # A worker serves the first part and goes away; another consumer (a restarted process
        # or another replica) takes the series over with fresh memory.
        ctx, worker = _worker(storage, "replica-a")
        await _feed(ctx, worker, live[: SPLIT - START])
        ctx, worker = _worker(storage, "replica-b")
        await _feed(ctx, worker, live[SPLIT - START :])
    else:
        ctx, worker = _worker(storage, "only")
        await _feed(ctx, worker, live)
    msgs = await ctx.bus.recent(SERIES, count=1000)
    return msgs, await storage.calibration.read(SERIES)


def _check_message(p: Prediction) -> None:
    nums = [p.lower, p.upper, p.predicted_close, p.sigma, p.p_up, p.effective_level]
    assert all(isinstance(v, float) and math.isfinite(v) for v in nums)
    assert p.schema_ == 2 and p.quantiles is not None
    q = [p.quantiles[k] for k in ("0.05", "0.25", "0.5", "0.75", "0.95")]
    assert q == sorted(q) and p.sigma is not None and p.sigma > 0
    assert p.lower < p.upper and 0 <= (p.p_up or 0) <= 1


async def test_calibration_survives_a_hand_over_and_has_no_look_ahead(redis: Redis) -> None:
    together, state_a = await _run(redis, "one", split=False)
    handed, state_b = await _run(redis, "two", split=True)
    assert len(together) == len(handed) == END - START
    for p in together:
        _check_message(p)
    # The hand-over continues the same sequence: same levels, same intervals, same state.
    assert [p.effective_level for p in handed] == [p.effective_level for p in together]
    assert [(p.lower, p.upper) for p in handed] == [(p.lower, p.upper) for p in together]
    assert state_a is not None and state_b is not None
    assert state_a["aci"] == state_b["aci"]
    assert state_b["aci"]["n"] == END - START - 1  # every interval but the last one settled

    # No look-ahead: message k's level follows from messages < k and closes up to its as_of.
    closes = {c.open_time: c.close for c in btc_candles(3000)}
    first = together[0]
    aci = AciState(target=0.9, gamma=GAMMA, alpha_t=1.0 - (first.effective_level or 0))
    for prev, p in itertools.pairwise(together):
        assert prev.target_time == p.as_of  # its outcome is the candle p was made at
        aci = aci.update(prev.lower, prev.upper, closes[p.as_of])
        assert p.effective_level == pytest.approx(aci.level, abs=1e-12)
        assert p.interval_level == 0.9
    assert len({p.effective_level for p in together}) > 3  # it does move

    # status shows nominal and effective level.
    lv = levels(state_b)
    assert lv is not None and lv["nominal"] == 0.9
    assert lv["effective"] == AciState.from_dict(state_b["aci"]).level
    assert lv["scored"] == END - START - 1


async def test_status_shows_nominal_and_effective_level(redis: Redis) -> None:
    storage = await _setup(redis, "st")
    ctx, worker = _worker(storage, "st")
    await _feed(ctx, worker, list(btc_candles(3000)[START : START + 5]))
    health = await series_health(
        storage, SERIES, ctx.clock, stale_after=10**6, scope=ctx.settings.model.scope
    )
    cal = health["calibration"]
    assert cal["nominal"] == 0.9 and cal["scored"] == 4
    latest = await ctx.bus.latest(SERIES)
    # The latest message used the level the stored state holds (its own outcome is pending).
    assert latest is not None and cal["effective"] == latest.effective_level
    assert health["model"]["kind"] in ("lstm", "garch", "ewma", "static")


async def test_econometric_champion_is_filtered_forward_across_a_restart(redis: Redis) -> None:
    meta = trained_tiny().meta
    ewma = meta["econometric"]["ewma"]
    change = {"champion": {**ewma, "kind": "ewma", "skill": 0.0}}
    together, _ = await _run(redis, "e1", split=False, meta_change=change)
    handed, _ = await _run(redis, "e2", split=True, meta_change=change)
    assert [p.model.kind for p in together] == ["ewma"] * (END - START)
    for p in together:
        _check_message(p)
    assert [p.sigma for p in handed] == pytest.approx([p.sigma for p in together], rel=1e-12)
    # The published sigma is the stored filter carried over the candles since training.
    model = VarianceModel.from_dict(ewma["params"])
    arrays = btc_arrays(3000)
    rets = log_returns(arrays)
    var, _ = model.filter(rets[START:END], FilterState.from_dict(ewma["state"]))
    want = [float(model.distribution(v).sigma()[0]) for v in var[1:]]
    want.append(float(model.distribution(_.var).sigma()[0]))
    assert [p.sigma for p in together] == pytest.approx(want, rel=1e-9)
    assert ewma["state_time"] == arrays.open_time[START - 1]


async def test_a_champion_without_parameters_falls_back_with_a_log_line(redis: Redis) -> None:
    change = {"champion": {"kind": "garch", "skill": 0.0}, "econometric": {}}
    # captured whatever logging an earlier test configured (stdout, stderr or JSON)
    with structlog.testing.capture_logs() as logs:
        msgs, _ = await _run(redis, "fb", split=False, meta_change=change)
    assert len(msgs) == END - START
    assert {p.model.kind for p in msgs} == {"lstm"}  # nothing econometric stored: the LSTM
    assert any(e["event"] == "forecast.fallback" for e in logs), logs


def _flat_after(n: int) -> list[Candle]:
    last = btc_candles(3000)[START - 1]
    return [
        Candle(last.open_time + (i + 1) * H1.ms, last.close, last.close, last.close, last.close, 0)
        for i in range(n)
    ]


async def test_zero_range_candles_never_give_a_nan(redis: Redis) -> None:
    storage = await _setup(redis, "flat")
    ctx, worker = _worker(storage, "flat")
    await _feed(ctx, worker, _flat_after(40))  # longer than the window: a constant series
    msgs = await ctx.bus.recent(SERIES, count=100)
    assert len(msgs) == 40
    for p in msgs:
        _check_message(p)
