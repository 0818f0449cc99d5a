"""``cryptocast backtest``: walk-forward evaluation against baselines, with a table, JSON and PNG.

Registers on :data:`cryptocast.app.app` (imported by ``cryptocast/cli.py``). The engine is
:mod:`forecaster.evaluation.backtest`; this module only loads candles (a CSV file or the Redis
candle store), chooses defaults that fit a small machine, shows progress, and writes the outputs.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cryptocast.app import app
from cryptocast.runtime import AppState, fail, open_storage, run

if TYPE_CHECKING:
    from config.settings import Settings
    from forecaster.data import CandleArrays

DEFAULT_TEST_CANDLES = 2000
DEFAULT_FOLDS = 8
DEFAULT_TRAIN_WINDOW = 4000


def _load_csv(path: str, series: str | None) -> tuple[CandleArrays, str, dict[str, Any]]:
    from core.series import SeriesId
    from forecaster.data import CandleArrays
    from ingest.csvfiles import read_csv

    result = read_csv(path)
    tf = result.info.timeframe
    if series is not None:
        sid = SeriesId.parse(series)
        if sid.timeframe != tf:
            raise ValueError(f"--series {series} has timeframe {sid.timeframe}, the file has {tf}")
        name = sid.key
    else:
        stem = Path(path).name.removesuffix(".gz").removesuffix(".csv")
        name = f"csv:{stem}:{tf.text}"
    arrays = CandleArrays.from_candles(result.candles, tf)
    return arrays, name, {"source": str(path), "rejected": result.reject_counts}


async def _load_redis(settings: Settings, series: str) -> tuple[CandleArrays, str, dict[str, Any]]:
    from core.series import SeriesId
    from forecaster.data import CandleArrays

    sid = SeriesId.parse(series)
    storage = await open_storage(settings)
    redis, store = storage.redis, storage.candles
    try:
        candles = await store.range(sid)
    finally:
        await redis.aclose()
    return CandleArrays.from_candles(candles, sid.timeframe), sid.key, {"source": "redis"}


def _between(arrays: CandleArrays, start: str | None, end: str | None) -> CandleArrays:
    import numpy as np

    from cryptocast.backfill_cmd import parse_time

    lo, hi = parse_time(start, "--start"), parse_time(end, "--end")
    i = 0 if lo is None else int(np.searchsorted(arrays.open_time, lo, side="left"))
    j = len(arrays) if hi is None else int(np.searchsorted(arrays.open_time, hi, side="right"))
    return arrays.slice(i, j)


@app.command()
def backtest(
    ctx: typer.Context,
    csv: Annotated[str | None, typer.Option("--csv", help="Candle CSV, any layout.")] = None,
    series: Annotated[
        str | None, typer.Option(help="exchange:symbol:tf: from Redis, or the name of --csv.")
    ] = None,
    start: Annotated[str | None, typer.Option(help="First candle: ISO time or epoch ms.")] = None,
    end: Annotated[str | None, typer.Option(help="Last candle: ISO time or epoch ms.")] = None,
    test_candles: Annotated[
        int | None, typer.Option(help="Test span (default: min(2000, a quarter of the data)).")
    ] = None,
    train_window: Annotated[
        int | None, typer.Option(help="Candles per training run (default 4000, capped by data).")
    ] = None,
    retrain_every: Annotated[
        int | None, typer.Option(help="Candles between retrains (default: 8 folds).")
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="lstm, seed, naive, drift, ar, ewma, garch, static, or all (comma-separated); "
            "'published' (the holdout-CRPS champion after calibration) is added.",
        ),
    ] = "all",
    horizon: Annotated[int, typer.Option(help="Also forecast H steps from the last candle.")] = 0,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: settings').")] = None,
    epochs: Annotated[int | None, typer.Option(help="Max epochs per fit (early stopping).")] = None,
    threads: Annotated[int | None, typer.Option(help="TensorFlow threads (default ≤ 4).")] = None,
    json_path: Annotated[str | None, typer.Option("--json", help="Write the JSON here.")] = None,
    plot: Annotated[str | None, typer.Option("--plot", help="Write the PNG here.")] = None,
    verbose: Annotated[bool, typer.Option(help="Log every training run.")] = False,
) -> None:
    """Walk-forward backtest with periodic retraining, against naive/drift/AR and EWMA/GARCH/static
    volatility baselines; every model's predictive distribution is scored."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    state: AppState = ctx.obj
    settings = state.settings()
    if csv is None and series is None:
        fail("give --csv PATH or --series exchange:symbol:tf")
    names = _parse_models(model)
    if horizon < 0:
        fail("--horizon must be 0 (none) or a number of steps")
    try:
        if csv is not None:
            arrays, name, source = _load_csv(csv, series)
        else:
            assert series is not None
            arrays, name, source = run(lambda: _load_redis(settings, series))
        arrays = _between(arrays, start, end)
        _run(
            settings, arrays, name, source, names,
            test_candles=test_candles, train_window=train_window, retrain_every=retrain_every,
            horizon=horizon, seed=seed, epochs=epochs, threads=threads,
            json_path=json_path, plot=plot, verbose=verbose,
        )  # fmt: skip
    except ValueError as e:  # bad file, bad series, too few candles: one line, no traceback
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except OSError as e:  # a missing or unreadable --csv
        fail(f"cannot read {e.filename or csv}: {e.strerror or e}")


def _parse_models(text: str) -> tuple[str, ...]:
    from forecaster.evaluation.backtest import MODEL_NAMES

    parts = [p.strip() for p in text.split(",") if p.strip()]
    if parts == ["all"]:
        return MODEL_NAMES
    bad = [p for p in parts if p not in MODEL_NAMES]
    if bad or not parts:
        fail(f"--model: unknown {', '.join(bad) or '(none)'}; use {', '.join(MODEL_NAMES)} or all")
    # Naive is the reference every score is read against (docs/architecture.md, decision 2):
    # always included.
    return tuple(m for m in MODEL_NAMES if m in parts or m == "naive")


def _run(
    settings: Settings,
    arrays: CandleArrays,
    name: str,
    source: dict[str, Any],
    names: tuple[str, ...],
    *,
    test_candles: int | None,
    train_window: int | None,
    retrain_every: int | None,
    horizon: int,
    seed: int | None,
    epochs: int | None,
    threads: int | None,
    json_path: str | None,
    plot: str | None,
    verbose: bool,
) -> None:
    from rich.console import Console

    from forecaster.evaluation.backtest import BacktestOptions
    from forecaster.evaluation.report import dumps, print_table, to_json, write_plot

    err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
    n = len(arrays)
    test = test_candles or min(DEFAULT_TEST_CANDLES, n // 4)
    if test < 1 or test >= n:
        raise ValueError(f"--test-candles must be between 1 and {n - 1} for {n} candles")
    window = train_window or min(DEFAULT_TRAIN_WINDOW, n - test)
    every = retrain_every or math.ceil(test / DEFAULT_FOLDS)
    options = BacktestOptions(
        test_candles=test,
        retrain_every=every,
        train_window=window,
        models=names,
        max_model_age=settings.schedule.max_model_age,
    )
    updates: dict[str, Any] = {"threads": threads or min(os.cpu_count() or 1, 4)}
    if seed is not None:
        updates["seed"] = seed
    if epochs is not None:
        updates["epochs"] = epochs
    model_settings = settings.model.model_copy(update=updates)
    if window < 100:
        raise ValueError(f"the train window must be at least 100 candles, got {window}")
    if not verbose:
        logging.getLogger("forecaster").setLevel(logging.WARNING)
    n_folds = math.ceil(test / every)
    s = model_settings
    err.print(
        f"[bold]backtest[/] {name}: {n:,} candles "
        f"({_iso(int(arrays.open_time[0]))} → {_iso(int(arrays.open_time[-1]))}, "
        f"{len(arrays.holes())} holes)\n"
        f"  test: last {test:,} candles in {n_folds} folds, retrain every {every} on the last "
        f"{window:,} candles (warm start, promotion as live)\n"
        f"  models: {', '.join(names)}; LSTM {s.layers}×{s.units} dropout {s.dropout}, "
        f"window {s.window}, features {','.join(s.features)}, ≤{s.epochs} epochs "
        f"(patience {s.patience}), batch {s.batch_size}, seed {s.seed}, {s.threads} threads"
    )
    if "lstm" in names or "seed" in names:
        from forecaster.training.model import configure_tensorflow

        configure_tensorflow(s.threads)
    t0 = time.perf_counter()
    result = _with_progress(err, arrays, model_settings, options, name, n_folds)
    paths = None
    if horizon:
        from forecaster.horizon import horizon_paths

        paths = horizon_paths(
            arrays,
            horizon,
            lstm=result.final_lstm,
            baselines=result.final_baselines,
            level=model_settings.interval_level,
        )
    doc = to_json(result, paths, extra={"source": source, "wall_seconds": 0.0})
    doc["wall_seconds"] = round(time.perf_counter() - t0, 2)
    # A log file or pipe gets a table wide enough to read, not rich's 80-column default.
    print_table(doc, Console(width=None if sys.stdout.isatty() else 200))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_bytes(dumps(doc))
        err.print(f"JSON → {json_path}")
    if plot:
        write_plot(doc, plot)
        err.print(f"plot → {plot}")
    err.print(f"done in {doc['wall_seconds']:.0f} s")


def _with_progress(
    err: Any, arrays: CandleArrays, settings: Any, options: Any, name: str, n_folds: int
) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from forecaster.evaluation.backtest import run_backtest

    tty = sys.stderr.isatty()
    progress = Progress(
        TextColumn("[bold]folds"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[last]}"),
        console=err,
        disable=not tty,
    )

    with progress:
        task = progress.add_task("folds", total=n_folds, last="")

        def on_fold(fold: Any, info: dict[str, Any]) -> None:
            parts = [f"fold {fold.number + 1}/{n_folds}: {fold.rows.size} points"]
            if "lstm" in info:
                li = info["lstm"]
                what = "promoted" if li["promoted"] else f"kept ({li['reason']})"
                parts.append(f"lstm {li['train_seconds']:.0f} s, {li['epochs_run']} ep, {what}")
            if "seed" in info:
                parts.append(f"seed {info['seed']['train_seconds']:.0f} s")
            if "published" in info:
                parts.append(f"published {info['published']['champion']}")
            line = "; ".join(parts)
            progress.update(task, advance=1, last=line)
            if not tty:  # a log file gets one line per fold instead of a bar
                err.print(line)

        return run_backtest(arrays, settings, options, series=name, on_fold=on_fold)


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
