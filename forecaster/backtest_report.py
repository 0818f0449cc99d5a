"""Backtest output: scores per model, the JSON report, the terminal table and the PNG.

Scores are in price space on the same test points for every model (see
:mod:`forecaster.metrics`). MASE divides each point's absolute error by the naive forecast's
in-sample MAE on *its fold's* train window, then averages: every fold is scaled by what naive
achieved on the data that fold's models were trained on. Direction accuracy counts only candles
that moved; the naive forecast calls no direction, so it scores 0 there by definition.

The JSON carries every point (times, actual, last close, fold, MASE scale, and each model's
prediction and interval) so any figure in it can be recomputed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forecaster.backtest import BacktestResult
from forecaster.metrics import mae, score

if TYPE_CHECKING:
    from rich.console import Console

    from forecaster.horizon import HorizonPath

__all__ = ["model_scores", "print_table", "to_json", "write_plot"]

PRICE_DECIMALS = 4
_COLORS = {
    "lstm": "tab:blue",
    "seed": "tab:red",
    "naive": "black",
    "drift": "tab:green",
    "ar": "tab:orange",
}


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
    return out


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
        },
    }
    if horizon:
        from forecaster.horizon import METHOD

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


def _fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    return "—" if v is None else format(float(v) * scale, spec)


def print_table(doc: dict[str, Any], console: Console) -> None:
    """The scores as a rich table, best MAE first; look-ahead models flagged."""
    from rich.table import Table

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
            cov = f"{m['coverage'] * 100:.1f}% ({_fmt(m['interval_width'], ',.0f')})"
        label = f"{name} [red](look-ahead)[/]" if m["lookahead"] else name
        table.add_row(
            label,
            _fmt(m["mae"], ",.2f"),
            _fmt(m["rmse"], ",.2f"),
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


def _dates(ms: Any) -> np.ndarray:
    return np.asarray(ms, dtype="datetime64[ms]")


def _arr(values: list[float | None] | None) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values or []], dtype=np.float64)


def write_plot(doc: dict[str, Any], path: str | Path, *, zoom: int = 120, dpi: int = 100) -> Path:
    """PNG from the JSON report: test span with the LSTM interval, a zoom, rolling error, horizon.

    Drawn from the report (not the live objects) so the picture shows exactly the reported
    numbers and can be redrawn from a saved JSON.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts, models = doc["points"], doc["models"]
    horizon = doc.get("horizon")
    n_panels = 4 if horizon else 3
    fig, axes = plt.subplots(n_panels, 1, figsize=(12, 3.4 * n_panels), constrained_layout=True)
    t, a, last = _dates(pts["target_time"]), _arr(pts["actual"]), _arr(pts["last_close"])
    pred = {name: _arr(p) for name, p in pts["pred"].items()}
    lower = {name: _arr(p) for name, p in pts["lower"].items()}
    upper = {name: _arr(p) for name, p in pts["upper"].items()}
    band = "lstm" if "lstm" in lower else next(iter(lower), None)
    level = doc["settings"]["interval_level"]
    # The LSTM is drawn last so it sits on top of the baselines it usually hugs.
    order = sorted((m for m in pred if m != "naive"), key=lambda m: m == "lstm")

    ax = axes[0]
    ax.plot(t, a, color="black", lw=0.8, label="actual close")
    if band is not None:
        cov = models[band]["coverage"]
        ax.fill_between(
            t, lower[band], upper[band], color=_COLORS[band], alpha=0.3, lw=0,
            label=f"{band} {level:.0%} one-step interval (walk-forward coverage {cov:.1%})",
        )  # fmt: skip
    for name, values in pred.items():
        if models[name]["lookahead"]:
            # At this scale a level model looks right; the panels below say otherwise.
            ax.plot(t, values, "--", color=_COLORS[name], lw=0.8, label=f"{name} (look-ahead)")
    ax.set_title(f"{doc['series']}: test span, one-step-ahead walk-forward ({a.size} points)")
    ax.legend(loc="best", fontsize=8)

    ax = axes[1]
    k = slice(max(0, a.size - zoom), None)
    ax.plot(t[k], a[k], color="black", lw=1.6, marker=".", ms=4, label="actual")
    if band is not None:
        ax.fill_between(t[k], lower[band][k], upper[band][k], color=_COLORS[band], alpha=0.15)
    for name in order:
        look = models[name]["lookahead"]
        label = f"{name} (look-ahead)" if look else name
        lw = 1.6 if name == "lstm" else 1.0
        ax.plot(t[k], pred[name][k], "--" if look else "-", color=_COLORS[name], lw=lw, label=label)
    ax.set_title(
        f"last {min(zoom, a.size)} test points: one-step predictions (naive = previous close)"
    )
    ax.legend(loc="best", fontsize=8, ncol=3)

    ax = axes[2]
    win = max(10, a.size // 25)
    naive_err = _rolling(np.abs(a - last), win)
    honest: list[np.ndarray] = []
    for name in order:
        ratio = _rolling(np.abs(a - pred[name]), win) / naive_err
        look = models[name]["lookahead"]
        if look:
            # Listed, not drawn: it is off this scale, and a line dipping in only confuses.
            label = f"{name} (look-ahead): median {np.nanmedian(ratio):.1f}×, not drawn"
            ax.plot([], [], "--", color=_COLORS[name], lw=1, label=label)
            continue
        honest.append(ratio)
        ax.plot(t, ratio, color=_COLORS[name], lw=1, label=name)
    ax.axhline(1.0, color="black", lw=1, label="naive (= 1)")
    if honest:
        # Scale to the honest models: a leaking model many times worse would flatten them all.
        v = np.concatenate(honest)
        v = v[np.isfinite(v)]
        if v.size:
            span = max(float(np.max(np.abs(v - 1.0))), 0.005) * 1.15
            ax.set_ylim(1.0 - span, 1.0 + span)
    ax.set_title(f"rolling MAE over {win} points ÷ naive's rolling MAE (below 1 beats naive)")
    ax.legend(loc="best", fontsize=8, ncol=3)

    if horizon:
        _plot_horizon(axes[3], horizon)
    for ax in axes:
        ax.grid(alpha=0.3)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def _rolling(x: np.ndarray, win: int) -> np.ndarray:
    out = np.full(x.size, np.nan)
    if x.size >= win:
        c = np.cumsum(np.insert(x, 0, 0.0))
        out[win - 1 :] = (c[win:] - c[:-win]) / win
    return out


def _plot_horizon(ax: Any, horizon: dict[str, Any]) -> None:
    hist = horizon["history"]
    steps = horizon["steps"]
    ax.plot(_dates(hist["open_time"]), hist["close"], color="black", lw=1.2, label="history")
    t0, c0 = horizon["from_open_time"], horizon["last_close"]
    for name, style in (("naive", ":"), ("lstm", "-")):
        p = horizon["models"].get(name)
        if p is None:
            continue
        color = "dimgray" if name == "naive" else _COLORS[name]
        t = _dates([t0, *p["target_time"]])
        ax.plot(t, [c0, *p["pred"]], style, color=color, lw=1.5, label=f"{name} forecast")
        ax.fill_between(
            t, [c0, *p["lower"]], [c0, *p["upper"]], color=color,
            alpha=0.2 if name == "lstm" else 0.08, lw=0,
            label=f"{name} {p['level']:.0%} interval (one-step quantiles × √h)",
        )  # fmt: skip
    ax.set_title(
        f"{steps}-step forecast from the last candle (recursive; range/volume held neutral)"
    )
    ax.legend(loc="best", fontsize=8)
