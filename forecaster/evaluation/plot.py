"""The backtest PNG, drawn from the JSON report so it shows exactly the reported numbers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_plot"]

_COLORS = {
    "lstm": "tab:blue",
    "seed": "tab:red",
    "naive": "black",
    "drift": "tab:green",
    "ar": "tab:orange",
    "ewma": "tab:purple",
    "garch": "tab:brown",
    "static": "tab:gray",
    "published": "tab:cyan",
}


def _dates(ms: Any) -> np.ndarray:
    return np.asarray(ms, dtype="datetime64[ms]")


def _arr(values: list[float | None] | None) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values or []], dtype=np.float64)


def write_plot(doc: dict[str, Any], path: str | Path, *, zoom: int = 120, dpi: int = 100) -> Path:
    """PNG from the JSON report: test span with the published (else LSTM) interval, a zoom,
    rolling error, rolling coverage, the distribution scores, and the horizon when there is one.

    Drawn from the report (not the live objects) so the picture shows exactly the reported
    numbers and can be redrawn from a saved JSON.
    """
    import matplotlib  # noqa: PLC0415 (matplotlib loads only for a plot)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 (matplotlib loads only for a plot)

    pts, models = doc["points"], doc["models"]
    horizon = doc.get("horizon")
    n_panels = 6 if horizon else 5
    fig, axes = plt.subplots(n_panels, 1, figsize=(12, 3.4 * n_panels), constrained_layout=True)
    t, a, last = _dates(pts["target_time"]), _arr(pts["actual"]), _arr(pts["last_close"])
    pred = {name: _arr(p) for name, p in pts["pred"].items()}
    lower = {name: _arr(p) for name, p in pts["lower"].items()}
    upper = {name: _arr(p) for name, p in pts["upper"].items()}
    band = next((m for m in ("published", "lstm") if m in lower), next(iter(lower), None))
    level = doc["settings"]["interval_level"]
    # The LSTM is drawn last so it sits on top of the baselines it usually hugs; the volatility
    # models and published repeat a point forecast drawn already (0 or a tiny drift).
    order = sorted(
        (m for m in pred if m in ("lstm", "seed", "drift", "ar")), key=lambda m: m == "lstm"
    )

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
    ax.set_ylabel("close")
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
    ax.set_ylabel("close")
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
    ax.set_ylabel("MAE ÷ naive's MAE")
    ax.legend(loc="best", fontsize=8, ncol=3)

    _plot_coverage(axes[3], t, a, lower, upper, level)
    _plot_scores(axes[4], models, level)
    if horizon:
        _plot_horizon(axes[5], horizon)
    for ax in axes:
        ax.grid(alpha=0.3)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def _plot_coverage(
    ax: Any,
    t: np.ndarray,
    a: np.ndarray,
    lower: dict[str, np.ndarray],
    upper: dict[str, np.ndarray],
    level: float,
) -> None:
    win = max(50, a.size // 20)
    for name in ("static", "ewma", "garch", "lstm", "published"):
        if name not in lower:
            continue
        hit = ((a >= lower[name]) & (a <= upper[name])).astype(float)
        lw = 1.8 if name == "published" else 1.0
        ax.plot(t, _rolling(hit, win), color=_COLORS[name], lw=lw, label=name)
    ax.axhline(level, color="black", lw=1, ls="--", label=f"nominal {level:.0%}")
    ax.set_title(f"rolling coverage of the {level:.0%} interval over {win} points")
    ax.set_ylabel("coverage")
    ax.legend(loc="best", fontsize=8, ncol=3)


def _plot_scores(ax: Any, models: dict[str, Any], level: float) -> None:
    names = [n for n, m in models.items() if m.get("crps") is not None]
    x = np.arange(len(names))
    bars = (
        ("crps_vs_garch", "CRPS ÷ GARCH's", -0.2),
        ("winkler_vs_static", f"Winkler {level:.0%} ÷ static's", 0.2),
    )
    for key, label, dx in bars:
        vals = [models[n].get(key) for n in names]
        h = [1.0 + v if v is not None else math.nan for v in vals]
        rects = ax.bar(x + dx, h, width=0.4, label=label)
        ax.bar_label(rects, labels=[f"{v:.4g}" if math.isfinite(v) else "" for v in h], fontsize=7)
    ax.axhline(1.0, color="black", lw=1)
    finite = [1.0 + models[n][k] for n in names for k, _, _ in bars if models[n].get(k) is not None]
    if finite:
        span = max(*(abs(v - 1.0) for v in finite), 0.01) * 1.3
        ax.set_ylim(1.0 - span, 1.0 + span)
    ax.set_xticks(x, names)
    ax.set_title("distribution scores relative to the econometric baselines (below 1 is better)")
    ax.set_ylabel("ratio")
    ax.legend(loc="best", fontsize=8)


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
    ax.set_ylabel("close")
    ax.legend(loc="best", fontsize=8)
