"""What the demo shows at the end: the live score of each series and the PNG of predictions
against the actual closes (the demo's machinery is :mod:`cryptocast.demo`)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from core.schemas import Prediction
from cryptocast.views import Column, fitted_table, fmt_skill


@dataclass
class SeriesSummary:
    """Live figures of one series over the demo's predictions whose target candle closed."""

    series: str
    predictions: int
    scored: int
    mae: float
    naive_mae: float
    coverage: float
    direction: float
    models: list[str]

    @property
    def skill(self) -> float:
        """1 - MAE/MAE_naive: > 0 beats the naive forecast."""
        return 1 - self.mae / self.naive_mae if self.naive_mae > 0 else math.nan


def summarise(preds: list[Prediction], closes: dict[int, float], series: str) -> SeriesSummary:
    """Live MAE vs naive, interval coverage and direction hits over the scored predictions."""
    errs, naive, covered, hits, moves = [], [], 0, 0, 0
    for p in preds:
        actual = closes.get(p.target_time)
        if actual is None:
            continue
        errs.append(abs(actual - p.predicted_close))
        naive.append(abs(actual - p.last_close))
        covered += p.lower <= actual <= p.upper
        if actual != p.last_close:
            moves += 1
            hits += (actual > p.last_close) == (p.predicted_close > p.last_close)
    n = len(errs)
    models = list(dict.fromkeys(p.model.version for p in preds))
    return SeriesSummary(
        series=series,
        predictions=len(preds),
        scored=n,
        mae=sum(errs) / n if n else math.nan,
        naive_mae=sum(naive) / n if n else math.nan,
        coverage=covered / n if n else math.nan,
        direction=hits / moves if moves else math.nan,
        models=models,
    )


def plot_predictions(
    preds: dict[str, list[Prediction]],
    closes: dict[str, dict[int, float]],
    summaries: list[SeriesSummary],
    path: Path,
) -> Path:
    """Predicted next close with its interval against the actual close, one panel per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    def dt(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, UTC)

    fig, axes = plt.subplots(len(preds), 1, figsize=(12, 4.2 * len(preds)), squeeze=False)
    for ax, (key, ps), summary in zip(axes[:, 0], preds.items(), summaries, strict=True):
        actual = closes[key]
        if ps:
            lo_t = ps[0].as_of - 15 * 60_000
            hi_t = ps[-1].target_time
            xs = sorted(t for t in actual if lo_t <= t <= hi_t)
            ax.plot([dt(t) for t in xs], [actual[t] for t in xs], color="black", lw=1.3,
                    label="actual close")  # fmt: skip
            tt = [dt(p.target_time) for p in ps]
            ax.fill_between(
                tt,
                [p.lower for p in ps],
                [p.upper for p in ps],
                color="tab:blue",
                alpha=0.18,
                step="mid",
                label=f"{ps[0].interval_level:.0%} prediction interval",
            )
            ax.plot(tt, [p.predicted_close for p in ps], ".-", color="tab:blue", lw=0.8, ms=3,
                    label="predicted close (one step ahead)")  # fmt: skip
            for prev, p in itertools.pairwise(ps):
                if p.model.version != prev.model.version:
                    ax.axvline(dt(p.target_time), color="tab:purple", ls="--", lw=0.8)
                    ax.annotate(
                        f"model {p.model.version.split('-')[0]}",
                        (dt(p.target_time), 1.0),
                        xycoords=("data", "axes fraction"),
                        fontsize=8,
                        color="tab:purple",
                        va="top",
                        ha="left",
                    )
        if not summary.scored:
            ax.set_title(f"{key}: no scored prediction yet", fontsize=10)
            ax.set_axis_off()
            continue
        ax.set_title(
            f"{key}: {summary.scored} scored predictions, live MAE {summary.mae:.4g} vs naive "
            f"{summary.naive_mae:.4g} (skill {fmt_skill(summary.skill)}), "
            f"interval coverage {summary.coverage:.0%}",
            fontsize=10,
        )
        ax.set_ylabel("price (USDT)")
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=UTC))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[-1, 0].set_xlabel("candle open time (UTC; replayed Binance 1m candles)")
    fig.suptitle("cryptocast demo: next-minute close, predicted live vs actual", fontsize=12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fig(x: float, spec: str) -> str:
    """A figure, or "-" where nothing was scored yet (never "nan")."""
    return "-" if math.isnan(x) else format(x, spec)


def print_summary(console: Console, summaries: list[SeriesSummary], seconds: float) -> None:
    """The closing table: live figures per series."""
    columns = [
        Column("series", [s.series for s in summaries], 0),
        Column("predictions", [str(s.predictions) for s in summaries], 2, "right"),
        Column("scored", [str(s.scored) for s in summaries], 1, "right"),
        Column("MAE", [_fig(s.mae, ".5g") for s in summaries], 1, "right"),
        Column("naive MAE", [_fig(s.naive_mae, ".5g") for s in summaries], 1, "right"),
        Column("skill", [fmt_skill(s.skill) for s in summaries], 0, "right"),
        Column("coverage", [_fig(s.coverage, ".0%") for s in summaries], 1, "right"),
        Column("direction", [_fig(s.direction, ".0%") for s in summaries], 2, "right"),
        Column("models", [", ".join(s.models) or "-" for s in summaries], 3, wrap=True),
    ]
    table = fitted_table(f"live score over the demo ({seconds:.0f}s)", columns, console.width)
    console.print(table)
    console.print(
        "[dim]skill = 1 - MAE/naive MAE (> 0 beats 'next close = last close'); one-minute "
        "returns are close to noise, so a small skill is the honest result.[/dim]"
    )
