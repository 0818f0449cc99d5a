"""Backtest output: scores per model, the JSON report, the terminal tables and the PNG.

Point scores are in price space on the same test points for every model (see
:mod:`forecaster.metrics`); distribution scores (CRPS, pinball, Winkler, QLIKE, Brier,
Christoffersen) are in log-return space, see :mod:`forecaster.evaluation.scores`. MASE (in
Hyndman's sense; the live score's ``relative_mae`` is another figure) divides each point's
absolute error by the naive forecast's in-sample MAE on *its fold's* train window, then
averages: every fold is scaled by what naive achieved on the data that fold's models were
trained on. Direction accuracy counts only candles
that moved; the naive forecast calls no direction, so it scores 0 there by definition.

The JSON carries every point (times, actual, last close, fold, MASE scale, and each model's
prediction and interval; for models with a distribution also ``sigma`` of the next log return,
``p_up``, ``quantiles`` of the next close at ``quantile_levels`` and the t's ``distribution``
parameters of the next log return, ``df`` null for a Gaussian; for ``published`` the
champion and the calibrated level per point) so any figure in it can be recomputed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from rich.table import Table

from forecaster.distribution import PUBLISHED_QUANTILES
from forecaster.evaluation.backtest import PUBLISHED, BacktestResult
from forecaster.evaluation.plot import write_plot
from forecaster.evaluation.scores import distribution_scores, volatility_at_as_of
from forecaster.horizon import METHOD
from forecaster.metrics import mae, price_from_return, score

if TYPE_CHECKING:
    from rich.console import Console

    from forecaster.horizon import HorizonPath

__all__ = ["dumps", "model_scores", "print_table", "to_json", "write_plot"]

PRICE_DECIMALS = 4
SIGNIFICANT = 6  # digits kept for sigma, p_up and volatility in the JSON
PARAM_DIGITS = 10  # digits kept for the distributions' parameters


def _num(v: Any) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def model_scores(result: BacktestResult) -> dict[str, dict[str, Any]]:
    """Per model: mae, rmse, mape, mase, direction, coverage, width, skill vs naive, ..."""
    a, last = result.actual, result.last_close
    naive_mae = mae(a, last)
    out: dict[str, dict[str, Any]] = {}
    for name, run in result.models.items():
        s = score(a, run.pred, last, scale=1.0, lower=run.lower, upper=run.upper)
        m = float(np.mean(np.abs(a - run.pred) / result.mase_scale)) if a.size else math.nan
        out[name] = {
            "n": s.n,
            "mae": _num(s.mae),
            "rmse": _num(s.rmse),
            "mape": _num(s.mape),
            "mase": _num(m),
            "direction": _num(s.direction),
            "coverage": _num(s.coverage) if s.coverage is not None else None,
            "interval_width": _num(s.width) if s.width is not None else None,
            "interval_level": result.settings.interval_level if run.lower is not None else None,
            "skill_vs_naive": _num(1.0 - s.mae / naive_mae) if naive_mae > 0 else None,
            "train_seconds": round(run.train_seconds, 3),
            "lookahead": run.lookahead,
        }
    for name, extra in distribution_scores(result).items():
        out[name].update(extra)
    return out


def _sig(x: np.ndarray, digits: int = SIGNIFICANT) -> list[float | None]:
    return [float(f"{v:.{digits}g}") if math.isfinite(v) else None for v in x.tolist()]


def dumps(doc: dict[str, Any]) -> bytes:
    """The report as JSON: indented, except ``points``, one compact line (it is most of it)."""

    if "points" not in doc:
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    marker = "\u0000points\u0000"
    text = orjson.dumps({**doc, "points": marker}, option=orjson.OPT_INDENT_2)
    quoted = orjson.dumps(marker)
    head, sep, tail = text.rpartition(quoted)
    assert sep, "the points marker is missing"
    return head + orjson.dumps(doc["points"]) + tail + b"\n"


def _prices(x: np.ndarray | None) -> list[float | None] | None:
    if x is None:
        return None
    return [None if not math.isfinite(v) else v for v in np.round(x, PRICE_DECIMALS).tolist()]


def to_json(
    result: BacktestResult,
    horizon: list[HorizonPath] | None = None,
    *,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``backtest --json`` document (its fields are a contract: README, "Backtest")."""
    arr, opts = result.arrays, result.options
    scores = model_scores(result)
    for name, run in result.models.items():
        scores[name]["folds"] = run.folds
    doc: dict[str, Any] = {
        "series": result.series,
        "timeframe": arr.timeframe.text,
        "test_points": int(result.rows.size),
        "models": scores,
        "data": {
            "candles": len(arr),
            "first_open_time": int(arr.open_time[0]),
            "last_open_time": int(arr.open_time[-1]),
            "holes": [list(h) for h in arr.holes()],
            "test_first_target_time": int(result.target_time[0]) if result.rows.size else None,
            "test_last_target_time": int(result.target_time[-1]) if result.rows.size else None,
        },
        "walk_forward": {
            "test_candles": opts.test_candles,
            "retrain_every": opts.retrain_every,
            "train_window": opts.train_window,
            "folds": len(result.folds),
            "ar_lags": opts.ar_lags,
            "max_model_age": opts.max_model_age,
            "seconds": round(result.seconds, 3),
            "fold_plan": [
                {
                    "fold": f.number,
                    "retrain_at_open_time": int(arr.open_time[f.start - 1]),
                    "train_rows": [f.train_start, f.start],
                    "test_rows": [f.start, f.stop],
                    "points": int(f.rows.size),
                    "mase_scale": _num(result.fold_scales[f.number]),
                }
                for f in result.folds
            ],
        },
        "settings": result.settings.model_dump(mode="json"),
        "points": {
            "target_time": [int(t) for t in result.target_time],
            "as_of": [int(t) for t in result.as_of],
            "actual": _prices(result.actual),
            "last_close": _prices(result.last_close),
            "fold": [int(f) for f in result.fold_of],
            "mase_scale": [float(v) for v in result.mase_scale],
            "pred": {n: _prices(r.pred) for n, r in result.models.items()},
            "lower": {n: _prices(r.lower) for n, r in result.models.items() if r.lower is not None},
            "upper": {n: _prices(r.upper) for n, r in result.models.items() if r.upper is not None},
            **_distribution_points(result),
        },
    }
    if horizon:
        hist = arr.tail(max(3 * int(horizon[0].step.size), 48))

        doc["horizon"] = {
            "steps": int(horizon[0].step.size),
            "from_open_time": int(arr.open_time[-1]),
            "last_close": float(arr.close[-1]),
            "method": METHOD,
            "models": {p.name: p.to_json() for p in horizon},
            "history": {
                "open_time": [int(v) for v in hist.open_time],
                "close": [float(v) for v in hist.close],
            },
        }
    if extra:
        doc.update(extra)
    return doc


def _distribution_points(result: BacktestResult) -> dict[str, Any]:
    last = result.last_close
    sigma: dict[str, Any] = {}
    p_up: dict[str, Any] = {}
    quantiles: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for name, run in result.models.items():
        dist = run.distribution()
        if dist is None:
            continue
        params[name] = {
            "loc": _sig(dist.loc, PARAM_DIGITS),
            "scale": _sig(dist.scale, PARAM_DIGITS),
            "df": _sig(dist.df, PARAM_DIGITS),  # null: Gaussian (inf)
        }
        sigma[name] = _sig(dist.sigma())
        p_up[name] = _sig(dist.p_up())
        q = price_from_return(last[:, None], dist.quantiles(PUBLISHED_QUANTILES))
        quantiles[name] = np.round(q, PRICE_DECIMALS).tolist()
    out: dict[str, Any] = {
        "quantile_levels": list(PUBLISHED_QUANTILES),
        "sigma": sigma,
        "p_up": p_up,
        "quantiles": quantiles,
        "distribution": params,
        "trailing_volatility": _sig(volatility_at_as_of(result)),
    }
    pub = result.models.get(PUBLISHED)
    if pub is not None and pub.level is not None:
        out["published"] = {"champion": pub.champion, "level": _sig(pub.level)}
    return out


def _sigfmt(v: Any, digits: int = 5) -> str:
    """``v`` with at least ``digits`` significant digits, thousands separated (any price)."""
    if v is None:
        return "—"
    x = float(v)
    if x == 0 or not math.isfinite(x):
        return format(x, ".0f")
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return format(x, f",.{decimals}f")


def _fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    return "—" if v is None else format(float(v) * scale, spec)


def print_table(doc: dict[str, Any], console: Console) -> None:
    """The scores as a rich table, best MAE first; look-ahead models flagged."""

    table = Table(
        title=f"{doc['series']}: walk-forward, {doc['test_points']} test points, "
        f"{doc['walk_forward']['folds']} folds",
        title_justify="left",
    )
    for col in ("model", "MAE", "RMSE", "MAPE %", "MASE", "vs naive", "direction"):
        table.add_column(col, justify="right" if col != "model" else "left")
    table.add_column("coverage (width)", justify="right")
    table.add_column("train s", justify="right")
    models = doc["models"]
    for name in sorted(models, key=lambda n: models[n]["mae"] or math.inf):
        m = models[name]
        cov = "—"
        if m["coverage"] is not None:
            cov = f"{m['coverage'] * 100:.1f}% ({_sigfmt(m['interval_width'], 4)})"
        label = f"{name} [red](look-ahead)[/]" if m["lookahead"] else name
        table.add_row(
            label,
            _sigfmt(m["mae"]),
            _sigfmt(m["rmse"]),
            _fmt(m["mape"], ".3f"),
            _fmt(m["mase"], ".3f"),
            _fmt(m["skill_vs_naive"], "+.2%"),
            _fmt(m["direction"], ".1%"),
            cov,
            _fmt(m["train_seconds"], ".1f"),
        )
    console.print(table)
    console.print(
        "[dim]vs naive = 1 − MAE/MAE(naive); direction on candles that moved (naive calls none); "
        "coverage of the one-step interval at level "
        f"{doc['settings']['interval_level']:.0%}.[/]"
    )
    _print_distribution_table(doc, console)


def _print_distribution_table(doc: dict[str, Any], console: Console) -> None:

    models = {n: m for n, m in doc["models"].items() if m.get("crps") is not None}
    if not models:
        return
    level = doc["settings"]["interval_level"]
    table = Table(
        title="predictive distributions of the next log return (lower is better, but coverage)",
        title_justify="left",
    )
    pct = f"{level:.0%}"
    columns = [  # header, score, format
        ("CRPS", "crps", ".4g"),
        ("vs GARCH", "crps_vs_garch", "+.2%"),
        ("pinball", "pinball", ".4g"),
        ("Winkler 80", "winkler_80", ".4g"),
        (f"Winkler {pct}", "winkler_90", ".4g"),
        ("vs static", "winkler_vs_static", "+.2%"),
        (f"cover {pct}", "coverage", ".1%"),
        ("volatile", "coverage_volatile", ".1%"),
        ("LR ind.", "christoffersen_lr", ".3g"),
        ("P(m|m)", "p_miss_after_miss", ".2f"),
        ("QLIKE", "qlike", ".5g"),
        ("Brier", "brier", ".5f"),
    ]
    table.add_column("model", justify="left")
    for header, _key, _spec in columns:
        table.add_column(header, justify="right")
    for name in sorted(models, key=lambda n: models[n]["crps"]):
        m = models[name]
        table.add_row(name, *(_fmt(m[key], spec) for _h, key, spec in columns))
    console.print(table)
    pub = models.get("published", {}).get("champions")
    if pub:
        told = ", ".join(f"{k} at {v} points" for k, v in pub.items())
        end = _fmt(models["published"].get("level_last"), ".1%")
        console.print(f"published = {told}; calibrated level ends at {end}")
    console.print(
        "[dim]log-return space; volatile = coverage in the top decile of trailing 24-candle "
        "realised volatility at as_of; LR ind. = Christoffersen independence (5 % critical "
        "3.84); P(m|m) = P(miss | previous miss); QLIKE = mean log h + r²/h; published = the "
        "holdout-CRPS champion per fold, interval at the ACI level.[/]"
    )
