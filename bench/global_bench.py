"""One global model vs one model per series on the four 1m files: training time and accuracy.

The data is the four Binance futures 1m months shipped in ``data/`` (AVAX, LINK, LTC, NEAR,
February 2026). Per-series: ``train`` once per file (N trainings, one after the other, as N
series' jobs would run on one core). Global: ``train_global`` once over the four (one job), its
sample bounded to the same windows the four per-series runs see. Both use the same architecture,
the same number of epochs (patience ≥ epochs: neither stops early) and the same tail of each
file; the two run side by side, one core each, each in its own process (its own peak memory).

Accuracy: both are scored on the same holdout points, the per-series split's holdout of each
file (the last ``holdout_fraction`` of its tail), through each model's serving path
(``LoadedModel.predict_distribution``): MAE of the point (price space, so per file), CRPS of the
predictive distribution (log-return space, so also pooled over the four files), and naive's
MAE on the same points. The global run's own ``meta["per_series"]`` scores are kept beside them
as a check that its holdout is those points.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.common import ROOT, binance_1m_candles, emit, emit_progress, peak_rss_mb

# Budget (make bench ≤ 15 min): a smaller tail than the service's 20,000 and fixed epochs.
TRAIN_CANDLES = int(os.environ.get("BENCH_GLOBAL_TRAIN_CANDLES", "8000"))
EPOCHS = int(os.environ.get("BENCH_GLOBAL_EPOCHS", "3"))


def files() -> dict[str, str]:
    """Series key → data file name, for every shipped 1m file."""
    out = {}
    for path in sorted((ROOT / "data").glob("*_1m_*.csv.gz")):
        name = path.name.removesuffix(".gz")
        sym = name.split("usdt_", 1)[0].upper()
        out[f"binance:{sym}/USDT:1m"] = name
    return out


def settings() -> Any:
    from config.settings import ModelSettings

    return ModelSettings(
        train_candles=TRAIN_CANDLES,
        epochs=EPOCHS,
        patience=EPOCHS,
        global_sample=TRAIN_CANDLES * len(files()),
    )


def _arrays() -> dict[str, Any]:
    from core.series import Timeframe
    from forecaster.data import CandleArrays

    return {
        key: CandleArrays.from_candles(binance_1m_candles(name), Timeframe("1m"))
        for key, name in files().items()
    }


def holdout_scores(model: Any, arrays: Any, s: Any) -> dict[str, Any]:
    """MAE, CRPS and naive's MAE of ``model`` on the per-series split's holdout of ``arrays``."""
    import numpy as np

    from forecaster.features import prepare
    from forecaster.metrics import score
    from forecaster.training.holdout import score_candidate

    used = arrays.tail(s.train_candles)
    data = prepare(
        used, s.features, s.window, s.early_stop_fraction, s.holdout_fraction, s.normalisation
    )
    ho = data.holdout
    dist, ok = model.predict_distribution(used, ho.rows)
    ws, dist = ho.subset(ok), dist.take(ok)
    scores = score_candidate(dist, ws, s.interval_level, data.mase_scale)
    naive = score(ws.actual_close, ws.last_close, ws.last_close, scale=data.mase_scale)
    return {
        "n": len(ws),
        "first_target_time": int(ws.target_time[0]),
        "mae": scores["mae"],
        "crps": scores["crps"],
        "crps_sum": float(np.sum(dist.crps(ws.target_ret))),
        "naive_mae": naive.to_json()["mae"],
    }


def _run(scope: str) -> dict[str, Any]:
    """Child process: train (one global model, or one per series) and score on the holdouts."""
    from forecaster.training.model import configure_tensorflow
    from forecaster.training.pooled import train_global
    from forecaster.training.train import train

    s = settings()
    configure_tensorflow(s.threads)
    arrays = _arrays()
    out: dict[str, Any] = {"scope": scope, "series": {}}
    if scope == "global":
        t0 = time.perf_counter()
        result = train_global(arrays, s)
        out["seconds"] = round(time.perf_counter() - t0, 1)
        out["epochs"] = result.meta.get("epochs_run")
        for key, a in arrays.items():
            own = result.meta["per_series"][key]
            out["series"][key] = {
                **holdout_scores(result.model, a, s),
                "own_holdout": {k: own.get(k) for k in ("n", "mae", "crps") if k in own},
            }
    else:
        total = 0.0
        for key, a in arrays.items():
            t0 = time.perf_counter()
            result = train(a, s)
            seconds = time.perf_counter() - t0
            total += seconds
            out["series"][key] = {
                **holdout_scores(result.model, a, s),
                "seconds": round(seconds, 1),
                "epochs": result.meta["epochs_run"],
                "own_holdout_crps": result.meta["holdout"]["candidate"]["crps"],
            }
        out["seconds"] = round(total, 1)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _child(scope: str) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "bench.global_bench", "--child", scope]
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(
            cmd, check=False, stdout=subprocess.PIPE, stderr=err, text=True, env=env
        )
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"training child {scope} failed:\n{err.read()[-3000:]}")
    figures: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures


def main() -> dict[str, Any]:
    # side by side, one core each (TensorFlow is held to one thread): the same conditions
    with ThreadPoolExecutor(2) as pool:
        glob_f, ser_f = pool.submit(_child, "global"), pool.submit(_child, "series")
        glob, ser = glob_f.result(), ser_f.result()
    figures: dict[str, Any] = {
        "train_candles": TRAIN_CANDLES,
        "epochs": EPOCHS,
        "series": list(files()),
        "global": glob,
        "series_models": ser,
    }
    same_points = all(
        glob["series"][k]["first_target_time"] == ser["series"][k]["first_target_time"]
        and glob["series"][k]["n"] == ser["series"][k]["n"]
        for k in files()
    )
    n_all = sum(ser["series"][k]["n"] for k in files())
    figures["same_holdout_points"] = same_points
    figures["pooled_crps_global"] = sum(glob["series"][k]["crps_sum"] for k in files()) / n_all
    figures["pooled_crps_series"] = sum(ser["series"][k]["crps_sum"] for k in files()) / n_all
    figures["mae_global_vs_series"] = {
        k: round(glob["series"][k]["mae"] / ser["series"][k]["mae"], 4) for k in files()
    }
    figures["training_s_global_vs_series"] = round(glob["seconds"] / ser["seconds"], 2)
    figures["ok_crps"] = figures["pooled_crps_global"] <= figures["pooled_crps_series"]
    figures["ok_mae"] = all(v <= 1.0 for v in figures["mae_global_vs_series"].values())
    figures["ok"] = same_points and figures["ok_crps"] and figures["ok_mae"]
    summary = {k: v for k, v in figures.items() if k not in ("global", "series_models")}
    emit_progress(f"global vs series: {summary}")
    return emit("global_training", figures)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(_run(sys.argv[2]), default=float))
    else:
        main()
