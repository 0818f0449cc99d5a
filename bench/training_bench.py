"""Training: one retrain on a month of real 1m candles, cold vs warm-started.

The data is LINK/USDT's 40,320 one-minute candles of February 2026. The live service retrains
on the newest ``train_candles`` every ``retrain_every`` candles; this measures exactly that
retrain: a *previous* model trained (cold) on the month minus its last 60 candles (one retrain
interval, the default ``retrain_every``), then the month's
retrain done twice under the same early-stopping rule: cold (fresh weights) and warm (from the
previous model's weights, as the service does). Each run is its own process so its peak memory
(VmHWM) is its own; both are scored on the same holdout of the same slices. Cold and warm
run at the same time, one core each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import binance_1m_candles, emit, peak_rss_mb

FILE = "linkusdt_binance_futures_1m_2026-02.csv"
RETRAIN_EVERY = 60  # the service default: the previous model is one retrain interval old


def _run_one(mode: str, out: Path, previous: Path | None) -> dict[str, Any]:
    """Child process: train once and write figures (and the artifact) to ``out``."""

    from config.settings import ModelSettings
    from core.series import Timeframe
    from forecaster.data import CandleArrays
    from forecaster.inference import LoadedModel
    from forecaster.training.model import configure_tensorflow
    from forecaster.training.train import train

    settings = ModelSettings(train_candles=int(os.environ.get("BENCH_TRAIN_CANDLES", "20000")))
    configure_tensorflow(settings.threads)
    candles = binance_1m_candles(FILE)
    if mode == "previous":
        candles = candles[:-RETRAIN_EVERY]
    arrays = CandleArrays.from_candles(candles, Timeframe("1m"))
    current = None
    if previous is not None:
        meta = json.loads((previous / "meta.json").read_text())
        current = LoadedModel.from_artifact((previous / "model.keras").read_bytes(), meta)
    t0 = time.perf_counter()
    result = train(arrays, settings, current=current, warm_start=mode == "warm")
    seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.keras").write_bytes(result.artifact)
    (out / "meta.json").write_text(json.dumps(result.meta, default=float))
    holdout = result.meta["holdout"]
    return {
        "seconds": round(seconds, 1),
        "epochs": result.meta["epochs_run"],
        "best_epoch": result.meta["best_epoch"],  # 0: no epoch beat the starting weights
        "initial_val_loss": result.meta["training"]["initial_val_loss"],
        "best_val_loss": result.meta["training"]["best_val_loss"],
        "holdout_mae": holdout["candidate"]["mae"],
        "naive_mae": holdout["naive"]["mae"],
        "skill": result.meta["skill"],
        "peak_rss_mb": peak_rss_mb(),
        "warm_started": result.meta["warm_started"],
    }


def _child(mode: str, out: Path, previous: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.training_bench", "--child", mode, str(out)]
    if previous is not None:
        cmd.append(str(previous))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"training child {mode} failed:\n{proc.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures


def main() -> dict[str, Any]:
    n = len(binance_1m_candles(FILE))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        previous = _child("previous", base / "previous", None)
        # cold and warm side by side, one core each (TensorFlow is held to one thread): the
        # same conditions for both, in half the wall time of running them one after the other
        with ThreadPoolExecutor(2) as pool:
            cold_f = pool.submit(_child, "cold", base / "cold", base / "previous")
            warm_f = pool.submit(_child, "warm", base / "warm", base / "previous")
            cold, warm = cold_f.result(), warm_f.result()
    figures = {
        "candles_in_month": n,
        "train_candles": int(os.environ.get("BENCH_TRAIN_CANDLES", "20000")),
        "previous_model": previous,
        "cold": cold,
        "warm": warm,
        "warm_speedup": round(cold["seconds"] / warm["seconds"], 2),
        "warm_holdout_mae_vs_cold": round(warm["holdout_mae"] / cold["holdout_mae"], 4),
        "target_warm_speedup": 5,
    }
    figures["ok"] = figures["warm_speedup"] >= 5 and warm["holdout_mae"] <= cold["holdout_mae"]
    return emit("training", figures)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        prev = Path(sys.argv[4]) if len(sys.argv) > 4 else None
        print(json.dumps(_run_one(sys.argv[2], Path(sys.argv[3]), prev)))
    else:
        main()
