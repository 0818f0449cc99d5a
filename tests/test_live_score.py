"""Live scoring against hand-computed figures, and its rolling window."""

from __future__ import annotations

import pytest

from core.schemas import Candle, Prediction
from forecaster.serving.live_score import LiveScorer
from storage.scores import relative_mae
from tests.factories import make_prediction

MIN = 60_000


def pred(as_of: int, last: float, predicted: float, version: str = "v1") -> Prediction:
    return make_prediction(
        as_of=as_of,
        last_close=last,
        predicted_close=predicted,
        predicted_return=0.0,
        lower=predicted - 1,
        upper=predicted + 1,
        version=version,
        skill=0.0,
        published_at=0,
        latency_ms=0.0,
    )


def closed(t: int, close: float) -> Candle:
    return Candle(t, close, close, close, close, 1.0)


def test_scores_against_naive_by_hand() -> None:
    s = LiveScorer(window=10)
    s.predicted(pred(0, 100, 101))  # actual 102: error 1, naive error 2, right direction, covered
    assert s.closed(closed(MIN, 102))
    s.predicted(pred(MIN, 102, 103))  # actual 100: error 3, naive 2, wrong direction, not covered
    assert s.closed(closed(2 * MIN, 100))
    assert not s.closed(closed(3 * MIN, 100))  # nothing was predicted for it
    f = s.figures()
    assert f["n"] == 2 and f["mae"] == pytest.approx(2.0) and f["naive_mae"] == pytest.approx(2.0)
    assert f["relative_mae"] == pytest.approx(1.0) and f["direction"] == 0.5
    assert f["coverage"] == 0.5
    assert f["mase"] == f["relative_mae"]  # its first name, still published
    assert f["model_figures"]["relative_mae"] == pytest.approx(1.0)
    assert f["model"] == "v1" and f["model_figures"]["n"] == 2


def test_window_rolls_and_tracks_the_current_model() -> None:
    s = LiveScorer(window=3)
    for i in range(6):
        s.predicted(pred(i * MIN, 100, 100 + (i + 1), version="v1" if i < 4 else "v2"))
        s.closed(closed((i + 1) * MIN, 100))  # the candle did not move: no direction
    f = s.figures()
    assert f["n"] == 3 and f["mae"] == pytest.approx((4 + 5 + 6) / 3)
    assert f["direction"] is None and f["relative_mae"] is None  # naive error is 0
    assert f["model"] == "v2" and f["model_figures"]["n"] == 2
    assert f["model_figures"]["mae"] == pytest.approx(5.5)


def test_relative_mae_read_under_either_name() -> None:
    assert relative_mae({"relative_mae": 0.8, "mase": 0.8, "n": 3}) == 0.8
    assert relative_mae({"mase": 1.2, "n": 3}) == 1.2  # written by an older forecaster
    assert relative_mae({"relative_mae": None, "n": 3}) is None
    assert relative_mae(None) is None and relative_mae({}) is None


def test_crps_of_the_published_distribution() -> None:
    import math

    from forecaster.distribution import ReturnDistribution

    s = LiveScorer(window=10)
    s.predicted(pred(0, 100, 101), (0.01, 0.02, 5.0))
    s.predicted(pred(MIN, 102, 103))  # no distribution (e.g. an old message): no CRPS
    assert s.closed(closed(MIN, 102)) and s.closed(closed(2 * MIN, 100))
    want = float(ReturnDistribution.of(0.01, 0.02, 5.0).crps(math.log(102 / 100))[0])
    f = s.figures()
    assert f["crps"] == pytest.approx(want) and f["n"] == 2
    assert f["coverage"] == 0.5
