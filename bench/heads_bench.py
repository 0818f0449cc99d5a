"""Which LSTM head measures best: each head trained on the same real candles, scored on the same
holdout by CRPS beside GARCH-t, EWMA and the static interval (training's own holdout).

``python -m bench.heads_bench [--series btc|link|...] [--candles N] [--epochs N]`` prints one JSON
line: per head, the LSTM's holdout CRPS, MAE vs naive, coverage at the calibrated level, its
training time, and the econometric candidates' CRPS on the same points (the same for every head:
they do not depend on the LSTM). The default head of ``model.head`` is the winner of this run on
BTC/USDT 1h (README, "Forecasting model").
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from bench.common import data_file, emit
from config.settings import ModelSettings
from tests.market_data import BTC_1H, FUTURES_1M

SERIES = {"btc": BTC_1H, **{k.lower(): v for k, v in FUTURES_1M.items()}}


def _arrays(name: str, candles: int) -> Any:
    import pandas as pd

    from core.series import Timeframe
    from forecaster.data import CandleArrays

    path = data_file(SERIES[name])
    df = pd.read_csv(path)
    if "timestamp" in df:
        ms = (pd.to_datetime(df["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")) // (
            pd.Timedelta(milliseconds=1)
        )
        tf = Timeframe("1h")
    else:
        ms = df["open_time"]
        tf = Timeframe("1m")
    df = df.tail(candles)
    ms = ms.tail(candles)
    return CandleArrays.from_columns(
        tf,
        ms.to_numpy(),
        df["open"].to_numpy(float),
        df["high"].to_numpy(float),
        df["low"].to_numpy(float),
        df["close"].to_numpy(float),
        df["volume"].to_numpy(float),
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.heads_bench", description=__doc__)
    p.add_argument("--series", default="btc", choices=sorted(SERIES))
    p.add_argument("--candles", type=int, default=8000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--heads", default="student_t,gaussian,mse")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from forecaster.training.train import train

    arrays = _arrays(args.series, args.candles)
    out: dict[str, Any] = {"series": args.series, "candles": len(arrays), "heads": {}}
    for head in args.heads.split(","):
        s = ModelSettings(
            head=head, epochs=args.epochs, patience=3, train_candles=args.candles, threads=2
        )
        t0 = time.perf_counter()
        r = train(arrays, s)
        ho = r.meta["holdout"]
        out["heads"][head] = {
            "crps": ho["candidate"]["crps"],
            "mae": ho["candidate"]["mae"],
            "point": r.meta["point"],
            "coverage_at_calibrated": ho["candidate"]["coverage"],
            "coverage_nominal": ho["candidate"]["coverage_nominal"],
            "calibrated_level": ho["candidate"]["calibrated_level"],
            "epochs": r.meta["epochs_run"],
            "train_s": round(time.perf_counter() - t0, 1),
            "champion": r.meta["champion"]["kind"],
        }
        out["holdout_n"] = ho["n"]
        out["naive_mae"] = ho["naive"]["mae"]
        out["econometric_crps"] = {k: ho[k]["crps"] for k in ("garch", "ewma", "static")}
        out["garch_fitted"] = ho["garch"]["fitted"]
    crps = {h: v["crps"] for h, v in out["heads"].items()}
    out["best_head"] = min(crps, key=lambda h: crps[h])
    return emit("heads", out)


if __name__ == "__main__":
    main()
