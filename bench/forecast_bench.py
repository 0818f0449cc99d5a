"""Per-candle forecast cost of every champion kind, beside Keras's ``model.predict`` (baseline).

``python -m bench.forecast_bench`` prints one JSON line: median microseconds per forecast for the
default-size LSTM (LSTM(50) x 2, window 60, all features, each head) through the numpy fast path
(window features, normalisation, forward pass, distribution, quantiles, p_up), the same through
``model.predict`` (the same-run baseline), and an econometric champion (one filter step + the
forecast). Untrained weights: the cost does not depend on their values.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.common import emit


def _median_us(fn: Callable[[], Any], n: int) -> float:
    fn()  # warm
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    return round(statistics.median(times), 1)


def main() -> dict[str, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from config.settings import ModelSettings
    from core.model_meta import EconometricEntry
    from forecaster.econometric import fit_model
    from forecaster.features import log_returns
    from forecaster.serving.champion import EconometricServer
    from forecaster.training.train import prepare_for
    from tests.forecaster_support import btc_arrays, btc_candles, untrained_model

    arrays = btc_arrays(3000)
    out: dict[str, Any] = {"heads": {}}
    for head in ("student_t", "gaussian", "mse"):
        s = ModelSettings(head=head)
        data = prepare_for(arrays, s)
        model = untrained_model(s, data, head_params={"mse_scale": 1.0})
        recent = arrays.tail(s.window + 1)
        out["heads"][head] = {
            "numpy_us": _median_us(lambda m=model, w=recent: m.predict_next(w), 300),
            "keras_predict_us": _median_us(lambda m=model, w=recent: m.predict_keras(w), 30),
        }
    rets = log_returns(arrays)
    garch = fit_model("garch", rets[:2000])
    _var, state = garch.filter(rets[:2000])
    entry = EconometricEntry(
        params=garch.to_dict(), state=state.to_dict(), state_time=int(arrays.open_time[1999])
    )
    candles = btc_candles(3000)
    server = EconometricServer(entry, arrays.timeframe)
    server.advance(candles[1999:2001])
    out["econometric_step_and_forecast_us"] = _median_us(
        lambda: (server.model.step(server.state, 0.001), server.forecast(30000.0, 0.9)), 2000
    )
    out["garch_fitted"] = garch.kind
    return emit("forecast", out)


if __name__ == "__main__":
    main()
