from __future__ import annotations

import math

import orjson
import pytest

from core.schemas import (
    REJECT_REASONS,
    Candle,
    CandleError,
    Prediction,
    candle_problem,
    validate_candle,
)
from core.series import Timeframe
from storage.codec import PACKED_SIZE, pack_candle, unpack_candle
from tests.factories import make_prediction

M1 = Timeframe("1m")
GOOD = Candle(1_769_904_000_000, 10.113, 10.13, 10.109, 10.128, 38521.0, 1077)


def test_good_candle_passes() -> None:
    assert candle_problem(GOOD, M1) is None
    assert validate_candle(GOOD, M1) is GOOD


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"open": math.nan}, "not_finite"),
        ({"close": math.inf}, "not_finite"),
        ({"volume": math.nan}, "not_finite"),
        ({"low": 0.0}, "non_positive_price"),
        ({"open": -1.0}, "non_positive_price"),
        ({"high": 2e12}, "out_of_range"),
        ({"volume": 1e19}, "out_of_range"),
        ({"high": 10.12}, "high_low"),  # close 10.128 above high
        ({"low": 10.12}, "high_low"),  # open 10.113 below low
        ({"volume": -1.0}, "negative_volume"),
        ({"trades": -5}, "malformed"),
        ({"open_time": GOOD.open_time + 1}, "misaligned"),
    ],
)
def test_each_validation_rule(changes: dict[str, float], reason: str) -> None:
    bad = Candle(**{**GOOD.to_dict(), **changes})
    assert candle_problem(bad, M1) == reason
    assert reason in REJECT_REASONS
    with pytest.raises(CandleError) as e:
        validate_candle(bad, M1)
    assert e.value.reason == reason


def test_future_candle_judged_by_clock() -> None:
    close = M1.next_open(GOOD.open_time)
    assert candle_problem(GOOD, M1, now_ms=close) is None
    assert candle_problem(GOOD, M1, now_ms=close - 1) == "future"


def test_zero_volume_is_valid() -> None:
    assert candle_problem(Candle(GOOD.open_time, 1.0, 1.0, 1.0, 1.0, 0.0), M1) is None


def test_packed_round_trip_is_exact_and_fits_listpack() -> None:
    raw = pack_candle(GOOD)
    assert len(raw) == PACKED_SIZE <= 64
    assert unpack_candle(GOOD.open_time, raw) == GOOD
    no_trades = Candle(GOOD.open_time, 1.5, 2.0, 1.0, 1.75, 3.25)
    assert unpack_candle(no_trades.open_time, pack_candle(no_trades)) == no_trades


def test_prediction_json_round_trip_uses_schema_alias() -> None:
    p = _prediction()
    raw = p.to_json()
    assert b'"schema":2' in raw and p.target_time == 120_000 and p.id == "60000-0"
    assert p.predicted_return == math.log(1.01)
    assert Prediction.from_json(raw) == p
    assert p.series.key == "binance:BTC/USDT:1m"


def test_schema_2_fields_and_schema_1_messages() -> None:
    base = orjson.loads(_prediction().to_json())
    full = Prediction.from_json(
        orjson.dumps(
            {
                **base,
                "sigma": 0.004,
                "quantiles": {"0.05": 99.0, "0.25": 99.7, "0.5": 100.0, "0.75": 100.3, "0.95": 101},
                "p_up": 0.52,
                "effective_level": 0.91,
                "model": {**base["model"], "kind": "garch"},
            }
        )
    )
    assert full.model.kind == "garch" and full.quantiles is not None
    assert full.quantiles["0.5"] == 100.0 and full.sigma == 0.004
    # A schema-1 message (none of the new fields) still parses, as an LSTM's.
    old = {k: v for k, v in base.items() if k not in {"sigma", "quantiles", "p_up"}}
    old["schema"] = 1
    old["model"] = {k: v for k, v in base["model"].items() if k != "kind"}
    p1 = Prediction.from_json(orjson.dumps(old))
    assert p1.schema_ == 1 and p1.sigma is None and p1.model.kind == "lstm"
    # Never a NaN or an infinity in a message.
    for bad in ({"sigma": float("nan")}, {"upper": float("inf")}, {"p_up": 1.5}):
        with pytest.raises(ValueError):
            Prediction.model_validate({**base, **bad})
    with pytest.raises(ValueError):
        Prediction.model_validate({**base, "model": {**base["model"], "kind": "oracle"}})


def _prediction() -> Prediction:
    return make_prediction(
        as_of=60_000,
        predicted_close=101.0,
        lower=99.0,
        upper=103.0,
        version="v1-abc",
        trained_at=1,
        skill=0.1,
        published_at=2,
        latency_ms=1.5,
    )
