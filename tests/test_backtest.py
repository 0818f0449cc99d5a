"""Walk-forward backtest: no look-ahead, fold schedule, recomputable metrics, CLI outputs, horizon.

Tiny models on real BTC/USDT 1h candles whose test span contains the real hole (2023-03-24 13:00).
The no-look-ahead proof: perturb every candle after a time ``t`` in the middle of a fold and
re-run; every prediction made at or before ``t`` must come out bit-for-bit the same, for the
LSTM and every baseline. The ``seed`` recipe (MinMax fit on the whole series) is exempt, marked
``lookahead``, and shown to fail that same check.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from forecaster.data import CandleArrays
from forecaster.distribution import ReturnDistribution
from forecaster.evaluation.backtest import BacktestOptions, BacktestResult, plan_folds, run_backtest
from forecaster.evaluation.report import to_json
from forecaster.horizon import horizon_paths
from tests.forecaster_support import BTC_CSV, HOLE_MS, btc_arrays, tiny_settings

N_CANDLES = 2300  # the hole is at row 1981: inside the test span below
OPTIONS = BacktestOptions(test_candles=360, retrain_every=120, train_window=700)
SETTINGS = tiny_settings(epochs=1, patience=1)
RETURN_MODELS = ("lstm", "naive", "drift", "ar")
DIST_MODELS = (*RETURN_MODELS, "ewma", "garch", "static", "published")


def _run(arrays: CandleArrays) -> BacktestResult:
    return run_backtest(arrays, SETTINGS, OPTIONS, series="binance:BTC/USDT:1h")


@pytest.fixture(scope="module")
def base() -> BacktestResult:
    return _run(btc_arrays(N_CANDLES))


@pytest.fixture(scope="module")
def cut(base: BacktestResult) -> int:
    """Row ``t``: the middle of the second fold (its model was trained before ``t``)."""
    f = base.folds[1]
    return (f.start + f.stop) // 2


@pytest.fixture(scope="module")
def perturbed(cut: int) -> BacktestResult:
    """The same run with every candle after row ``cut`` changed (prices and volumes)."""
    a = btc_arrays(N_CANDLES)
    rng = np.random.default_rng(7)
    after = np.arange(len(a)) > cut
    # One factor per candle for open/high/low/close keeps every candle valid; a drifting walk
    # times 1.4 moves returns, ranges, the level and the whole-series max.
    factor = 1.4 * np.exp(np.cumsum(rng.normal(0, 0.01, after.sum())))
    cols = {k: getattr(a, k).copy() for k in ("open", "high", "low", "close", "volume")}
    for k in ("open", "high", "low", "close"):
        cols[k][after] *= factor
    cols["volume"][after] *= rng.uniform(0.2, 5.0, after.sum())
    return _run(CandleArrays.from_columns(a.timeframe, a.open_time, **cols))


def test_no_prediction_made_at_or_before_t_sees_a_later_candle(
    base: BacktestResult, perturbed: BacktestResult, cut: int
) -> None:
    np.testing.assert_array_equal(base.rows, perturbed.rows)
    made_by_t = base.rows - 1 <= cut  # as_of (the last candle read) at or before t
    later = ~made_by_t
    assert made_by_t.sum() > OPTIONS.retrain_every and later.sum() > OPTIONS.retrain_every
    for name in DIST_MODELS:
        b, p = base.models[name], perturbed.models[name]
        assert not b.lookahead
        for field in ("pred", "lower", "upper", "loc", "scale", "df", "level"):
            np.testing.assert_array_equal(
                getattr(b, field)[made_by_t], getattr(p, field)[made_by_t], err_msg=name
            )
        # The perturbation is real: what is predicted after t does change.
        assert not np.allclose(b.pred[later], p.pred[later]), name
        if name in ("ewma", "garch", "static"):  # the others may keep a fold's model and sigma
            assert not np.allclose(b.scale[later], p.scale[later]), name
    # What is published at or before t (champion, calibrated level) is the same too.
    pub_b, pub_p = base.models["published"], perturbed.models["published"]
    assert pub_b.champion is not None and pub_p.champion is not None
    assert [c for c, k in zip(pub_b.champion, made_by_t, strict=True) if k] == [
        c for c, k in zip(pub_p.champion, made_by_t, strict=True) if k
    ]


def test_the_seed_recipe_is_marked_and_does_look_ahead(
    base: BacktestResult, perturbed: BacktestResult, cut: int
) -> None:
    seed_b, seed_p = base.models["seed"], perturbed.models["seed"]
    assert seed_b.lookahead and seed_b.lower is None
    assert to_json(base)["models"]["seed"]["lookahead"] is True
    made_by_t = base.rows - 1 <= cut
    # Its MinMax scaler saw the future's range: changing the future changes past predictions.
    assert not np.allclose(seed_b.pred[made_by_t], seed_p.pred[made_by_t])


def test_folds_are_chronological_and_retrain_every_k(base: BacktestResult) -> None:
    a, k = base.arrays, OPTIONS.retrain_every
    folds = base.folds
    assert len(folds) == math.ceil(OPTIONS.test_candles / k) == 3
    starts = [int(a.index[f.start]) for f in folds]
    assert np.all(np.diff(starts) == k)  # counted in candles, across the hole too
    assert starts[0] == a.index[-1] - OPTIONS.test_candles + 1 and folds[-1].stop == len(a)
    for f, nxt in itertools.pairwise(folds):
        assert f.stop == nxt.start
    for f in folds:
        assert f.train_start == f.start - OPTIONS.train_window
        assert f.rows.size == 0 or (f.rows.min() >= f.start and f.rows.max() < f.stop)
    # Each LSTM retrain used exactly the train window before its fold, and warm-started after
    # the first one, as the live service does.
    lstm_folds = base.models["lstm"].folds
    assert [x["fold"] for x in lstm_folds] == [0, 1, 2]
    for f, info in zip(folds, lstm_folds, strict=True):
        assert info["train_last_time"] == int(a.open_time[f.start - 1])
        assert info["train_first_time"] == int(a.open_time[f.train_start])
        assert info["warm_started"] is (f.number > 0)
    # Points are chronological, and right after the hole the window would cross it: skipped.
    assert np.all(np.diff(base.rows) > 0)
    w = SETTINGS.window
    assert np.all(a.index[base.rows] - a.index[base.rows - w - 1] == w + 1)
    after_hole = (base.target_time > HOLE_MS) & (base.target_time <= HOLE_MS + w * 3_600_000)
    assert not after_hole.any()
    # The hole cost its own candle and the w + 1 targets whose windows would reach across it.
    assert base.rows.size == OPTIONS.test_candles - 1 - (w + 1)
    assert plan_folds(a, OPTIONS, w)[1].tolist() == base.rows.tolist()


def test_json_metrics_match_a_recomputation_from_the_points(base: BacktestResult) -> None:
    doc = orjson.loads(orjson.dumps(to_json(base)))
    assert doc["series"] == "binance:BTC/USDT:1h" and doc["test_points"] == base.rows.size
    pts = doc["points"]
    actual, last = np.array(pts["actual"]), np.array(pts["last_close"])
    scale = np.array(pts["mase_scale"])
    for name, m in doc["models"].items():
        for key in ("mae", "rmse", "mape", "mase", "direction", "coverage", "train_seconds"):
            assert key in m, (name, key)
        pred = np.array(pts["pred"][name])
        err = actual - pred
        assert m["mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-6)
        assert m["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-6)
        assert m["mape"] == pytest.approx(100 * np.mean(np.abs(err) / actual), rel=1e-6)
        assert m["mase"] == pytest.approx(np.mean(np.abs(err) / scale), rel=1e-6)
        moved = actual != last
        hit = np.sign(actual - last)[moved] == np.sign(pred - last)[moved]
        assert m["direction"] == pytest.approx(hit.mean(), abs=1e-9)
        if name == "seed":
            assert m["coverage"] is None and "crps" not in m
        else:
            lo, hi = np.array(pts["lower"][name]), np.array(pts["upper"][name])
            inside = (actual >= lo) & (actual <= hi)
            assert m["coverage"] == pytest.approx(np.mean(inside))
            _check_distribution_scores(m, pts, name, actual, last, inside)
    assert doc["models"]["naive"]["direction"] == 0.0  # calls no direction, by definition
    # The fold scale is the naive MAE on that fold's train window.
    f0 = base.folds[0]
    close = base.arrays.close[f0.train_start : f0.start]
    steps = np.abs(np.diff(close))
    gap = np.diff(base.arrays.index[f0.train_start : f0.start]) == 1
    assert doc["walk_forward"]["fold_plan"][0]["mase_scale"] == pytest.approx(steps[gap].mean())


def _check_distribution_scores(
    m: dict[str, Any],
    pts: dict[str, Any],
    name: str,
    actual: np.ndarray,
    last: np.ndarray,
    inside: np.ndarray,
) -> None:
    """CRPS, Winkler, Brier and the volatile-decile coverage, recomputed from the points."""
    p = pts["distribution"][name]
    df = np.array([math.inf if v is None else v for v in p["df"]])
    dist = ReturnDistribution.of(np.array(p["loc"]), np.array(p["scale"]), df)
    y = np.log(actual / last)
    assert m["crps"] == pytest.approx(float(np.mean(dist.crps(y))), rel=1e-6)
    # Prices are rounded to 4 decimals in the JSON: the recomputed Winkler is close, not equal.
    lo = np.log(np.array(pts["lower"][name]) / last)
    hi = np.log(np.array(pts["upper"][name]) / last)
    pen = 20 * (np.maximum(lo - y, 0) + np.maximum(y - hi, 0))
    assert m["winkler_90"] == pytest.approx(float(np.mean(hi - lo + pen)), rel=1e-4)
    assert m["brier"] == pytest.approx(float(np.mean((np.array(pts["p_up"][name]) - (y > 0)) ** 2)))
    vol = np.array([math.nan if v is None else v for v in pts["trailing_volatility"]])
    top = np.isfinite(vol) & (vol >= np.nanquantile(vol, 0.9))
    assert m["volatile_points"] == int(top.sum()) > 0
    assert m["coverage_volatile"] == pytest.approx(float(np.mean(inside[top])), abs=1e-9)
    q = np.array(pts["quantiles"][name])
    assert q.shape == (actual.size, 5) and np.all(np.diff(q, axis=1) > 0)
    assert np.allclose(pts["sigma"][name], dist.sigma(), rtol=1e-5)


def test_published_is_the_holdout_champion_calibrated(base: BacktestResult) -> None:
    pub = base.models["published"]
    assert pub.champion is not None and set(pub.champion) <= set(DIST_MODELS)
    for f, info in zip(base.folds, base.models["lstm"].folds, strict=True):
        assert info["fold"] == f.number
    # Each point carries the champion's forecast; the level moves with ACI from the nominal 90 %.
    for i, c in enumerate(pub.champion):
        assert pub.scale is not None and base.models[c].scale is not None
        assert pub.scale[i] == base.models[c].scale[i] and pub.pred[i] == base.models[c].pred[i]
    assert pub.level is not None and pub.level[0] == pytest.approx(0.9)
    assert np.ptp(pub.level) > 0 and np.all((pub.level >= 0.5) & (pub.level <= 0.995))
    doc = to_json(base)
    assert doc["points"]["published"]["champion"] == pub.champion
    assert sum(doc["models"]["published"]["champions"].values()) == base.rows.size


def test_horizon_has_h_points_with_widening_intervals(base: BacktestResult) -> None:
    h = 12
    paths = horizon_paths(
        base.arrays, h, lstm=base.final_lstm, baselines=base.final_baselines, level=0.9
    )
    assert {p.name for p in paths} == set(RETURN_MODELS)
    last_t = int(base.arrays.open_time[-1])
    for p in paths:
        assert p.pred.size == p.lower.size == p.upper.size == h
        assert p.target_time.tolist() == [last_t + i * 3_600_000 for i in range(1, h + 1)]
        assert np.all(p.lower < p.pred) and np.all(p.pred < p.upper)
        assert np.all(np.diff(p.upper - p.lower) > 0), p.name
    naive = next(p for p in paths if p.name == "naive")
    assert np.allclose(naive.pred, base.arrays.close[-1])


def _cli(args: list[str], env: dict[str, str] | None = None) -> Any:
    from cryptocast.cli import app

    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOCAST_")}
    return CliRunner().invoke(app, ["backtest", *args], env={**clean, **(env or {})})


def test_cli_writes_json_and_png_with_horizon(tmp_path: Path) -> None:
    csv = tmp_path / "btc.csv"
    csv.write_text("".join(BTC_CSV.read_text().splitlines(keepends=True)[:1201]))
    out_json, out_png = tmp_path / "r" / "bt.json", tmp_path / "r" / "bt.png"
    args = ["--csv", str(csv), "--model", "lstm,drift,ar", "--test-candles", "200"]
    args += ["--train-window", "600", "--retrain-every", "100", "--horizon", "6"]
    args += ["--json", str(out_json), "--plot", str(out_png), "--seed", "3"]
    tiny = {"CRYPTOCAST_MODEL__UNITS": "4", "CRYPTOCAST_MODEL__WINDOW": "16"}
    r = _cli(args, {**tiny, "CRYPTOCAST_MODEL__EPOCHS": "1"})
    assert r.exit_code == 0, r.output
    assert "walk-forward" in r.stdout and "lstm" in r.stdout
    assert "CRPS" in r.stdout and "published = " in r.stdout  # the distribution table
    doc = orjson.loads(out_json.read_bytes())
    assert doc["series"] == "csv:btc:1h" and doc["test_points"] == 200
    # naive always included, published added
    assert set(doc["models"]) == {"lstm", "naive", "drift", "ar", "published"}
    assert doc["walk_forward"]["folds"] == 2 and doc["settings"]["seed"] == 3
    hz = doc["horizon"]
    assert hz["steps"] == 6 and set(hz["models"]) == {"lstm", "naive", "drift", "ar"}
    for p in hz["models"].values():
        width = np.array(p["upper"]) - np.array(p["lower"])
        assert len(p["pred"]) == 6 and np.all(np.diff(width) > 0)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_png.stat().st_size > 10_000


def test_cli_usage_errors_are_one_line(tmp_path: Path) -> None:
    r = _cli([])
    assert r.exit_code == 2 and "give --csv PATH or --series" in r.output
    r = _cli(["--csv", str(BTC_CSV), "--model", "prophet"])
    assert r.exit_code == 2 and "unknown prophet" in r.output
    r = _cli(["--csv", str(BTC_CSV), "--series", "binance:BTC/USDT:1d"])
    assert r.exit_code == 2 and "timeframe" in r.output and "Traceback" not in r.output
    r = _cli(["--csv", str(tmp_path / "nope.csv")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    (line,) = r.output.strip().splitlines()
    assert line.startswith("cryptocast: error: ") and "nope.csv" in line
    assert "No such file or directory" in line


async def test_cli_reads_a_series_from_redis(redis: Any, redis_server: Any) -> None:
    from core.series import SeriesId
    from storage.candles import CandleStore
    from storage.keys import Keys
    from tests.forecaster_support import btc_candles

    series = "binance:BTC/USDT:1h"
    await CandleStore(redis, Keys()).upsert(SeriesId.parse(series), btc_candles(900))
    args = ["--series", series, "--model", "naive,ar", "--test-candles", "100"]
    args += ["--start", "2023-01-05"]  # drops the first 96 candles
    r = await asyncio.to_thread(_cli, args, {"CRYPTOCAST_REDIS_URL": redis_server.url})
    assert r.exit_code == 0, r.output
    assert "binance:BTC/USDT:1h" in r.stdout and "100 test points" in r.stdout
