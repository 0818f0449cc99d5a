"""Training: metadata, scoring on one holdout, warm start, determinism, and the promotion rules."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest

from core.model_meta import ModelMeta
from forecaster.features import FeatureError
from forecaster.inference import LoadedModel
from forecaster.training.model import build_model
from forecaster.training.promotion import decide_promotion
from forecaster.training.train import TrainingResult, should_promote, train
from tests.forecaster_support import HOLE_MS, btc_arrays, tiny_settings, trained_tiny, weights_equal


@pytest.fixture(scope="module")
def cold() -> TrainingResult:
    return trained_tiny()


@pytest.fixture(scope="module")
def current(cold: TrainingResult) -> LoadedModel:
    return LoadedModel.from_artifact(cold.artifact, cold.meta)


@pytest.fixture(scope="module")
def frozen_runs(current: LoadedModel) -> tuple[TrainingResult, TrainingResult]:
    """Warm and forced-cold runs with a learning rate so small the weights cannot move."""
    s = tiny_settings(learning_rate=1e-12, epochs=1)
    arrays = btc_arrays(3000)
    warm = train(arrays, s, current=current)
    forced_cold = train(arrays, s, current=current, warm_start=False)
    return warm, forced_cold


def test_meta_is_json_and_complete(cold: TrainingResult) -> None:
    meta = orjson.loads(orjson.dumps(cold.meta))
    assert meta == cold.meta  # no numpy scalars or NaN hiding in it
    for key in (
        "schema",
        "kind",
        "architecture",
        "scaler",
        "training_range",
        "slices",
        "holdout",
        "skill",
        "interval",
        "epochs_run",
        "duration_s",
        "warm_started",
        "keras_version",
        "artifact_sha256",
        "training",
        "champion",
        "point",
    ):
        assert key in meta, key
    assert meta["architecture"] == {
        "units": 8,
        "layers": 2,
        "dropout": 0.2,
        "window": 24,
        "features": ["ret", "range", "vol", "gk", "tod_sin", "tod_cos"],
        "head": "student_t",
        "normalisation": "trailing_rms",
    }
    rng = meta["training_range"]
    assert rng["candles"] == 2800 and rng["holes"] == [[HOLE_MS, HOLE_MS]]
    assert rng["first_open_time"] < meta["slices"]["holdout"]["first_target_time"]
    assert meta["slices"]["holdout"]["last_target_time"] == rng["last_open_time"]
    assert 1 <= meta["epochs_run"] <= 2 and meta["warm_started"] is False
    assert cold.artifact[:2] == b"PK"  # a .keras zip


def test_holdout_scores_and_skill(cold: TrainingResult) -> None:
    ho = cold.meta["holdout"]
    assert ho["n"] == cold.meta["slices"]["holdout"]["windows"]
    for name in ("candidate", "naive", "drift", "ar5"):
        assert ho[name]["n"] == ho["n"]
    assert ho["current"] is None
    skill = cold.meta["skill"]
    assert skill == pytest.approx(1 - ho["candidate"]["mae"] / ho["naive"]["mae"])
    # Naive's MASE on the holdout is its MAE over the train slice's naive MAE.
    assert ho["naive"]["mase"] == pytest.approx(ho["naive"]["mae"] / ho["mase_scale"])
    iv = cold.meta["interval"]
    assert iv["level"] == 0.9 and iv["q_low"] < 0 < iv["q_high"]
    assert ho["candidate"]["coverage"] == pytest.approx(0.9, abs=0.02)  # calibrated there
    assert 0.5 < iv["coverage_early_stop"] <= 1.0


def test_early_stopping_keeps_the_best_epoch(cold: TrainingResult) -> None:
    tr = cold.meta["training"]
    best = min([tr["initial_val_loss"], *tr["val_loss"]])
    assert tr["best_val_loss"] == pytest.approx(best)
    x, y = _early_stop_xy(cold)
    loss = float(cold.model.model.evaluate(x, y, verbose=0, batch_size=512))
    assert loss == pytest.approx(best, rel=1e-4)


def _early_stop_xy(result: TrainingResult) -> tuple[np.ndarray, np.ndarray]:
    from forecaster.features import prepare

    s = tiny_settings()
    data = prepare(
        btc_arrays(3000).slice(0, 2800),
        s.features,
        s.window,
        s.early_stop_fraction,
        s.holdout_fraction,
        s.normalisation,
    )
    return data.early_stop.x, data.early_stop.y


def test_warm_start_starts_from_current_weights(
    current: LoadedModel, frozen_runs: tuple[TrainingResult, TrainingResult]
) -> None:
    warm, forced_cold = frozen_runs
    assert warm.meta["warm_started"] is True and forced_cold.meta["warm_started"] is False
    start = current.model.get_weights()
    assert weights_equal(warm.model.model.get_weights(), start, atol=1e-6)
    assert not weights_equal(forced_cold.model.model.get_weights(), start, atol=1e-3)


def test_warm_start_needs_a_matching_architecture(current: LoadedModel) -> None:
    assert current.matches(tiny_settings())
    assert not current.matches(tiny_settings(units=6))
    assert not current.matches(tiny_settings(window=16))
    assert not current.matches(tiny_settings(features=["ret", "range"]))


def test_current_is_scored_on_the_same_holdout(
    cold: TrainingResult, frozen_runs: tuple[TrainingResult, TrainingResult]
) -> None:
    warm, forced_cold = frozen_runs
    for result in frozen_runs:
        ho = result.meta["holdout"]
        assert ho["current_sha256"] == cold.meta["artifact_sha256"]
        assert ho["current"]["n"] == ho["candidate"]["n"] == ho["naive"]["n"] == ho["n"]
        # The old model's holdout ended where the new one's began: it never trained on it.
        assert ho["current_overlaps_holdout"] is False
    # Same current, same holdout: the same figures whichever candidate was trained.
    assert warm.meta["holdout"]["current"] == forced_cold.meta["holdout"]["current"]
    assert warm.meta["holdout"]["naive"] == forced_cold.meta["holdout"]["naive"]


def test_current_with_longer_window_scored_on_common_targets(current: LoadedModel) -> None:
    # Remove a candle inside the holdout: the current model (window 24) loses more targets
    # after the hole than the candidate (window 16); all scores use the common ones.
    arrays = btc_arrays(3000)
    keep = np.ones(len(arrays), dtype=bool)
    keep[2700] = False
    holed = type(arrays).from_columns(
        arrays.timeframe,
        arrays.open_time[keep],
        arrays.open[keep],
        arrays.high[keep],
        arrays.low[keep],
        arrays.close[keep],
        arrays.volume[keep],
    )
    # A current version whose champion is its LSTM (an econometric one forecasts every row).
    lstm_meta = current.meta.replace(champion={"kind": "lstm"})
    lstm_current = LoadedModel.from_keras(current.model, lstm_meta)
    result = train(holed, tiny_settings(window=16, epochs=1), current=lstm_current)
    ho = result.meta["holdout"]
    assert result.meta["warm_started"] is False
    assert ho["n_dropped_for_current"] == 8 and ho["current_kind"] == "lstm"
    assert ho["n"] == ho["candidate"]["n"] == ho["current"]["n"] == ho["naive"]["n"]
    for kind in ("garch", "ewma", "static"):
        assert ho[kind]["n"] == ho["n"]


def test_too_few_candles_raise() -> None:
    with pytest.raises(FeatureError):
        train(btc_arrays(3000).slice(0, 30), tiny_settings())


def test_seeded_builds_are_identical() -> None:
    s = tiny_settings(seed=3)
    a, b = build_model(3, s), build_model(3, s)
    c = build_model(3, tiny_settings(seed=4))
    assert weights_equal(a.get_weights(), b.get_weights())
    assert not weights_equal(a.get_weights(), c.get_weights())


def test_architecture_follows_layers() -> None:
    names = [type(x).__name__ for x in build_model(3, tiny_settings(layers=3)).layers]
    assert names == ["LSTM", "Dropout", "LSTM", "Dropout", "LSTM", "Dense"]
    names = [type(x).__name__ for x in build_model(3, tiny_settings(layers=1)).layers]
    assert names == ["LSTM", "Dense"]


# promotion rules -----------------------------------------------------------------------------


def _meta_of(holdout: dict[str, Any] | None = None, **fields: Any) -> ModelMeta:
    """Metadata with what promotion reads (the training range is required of every version)."""
    return ModelMeta.parse({"training_range": {"last_open_time": 0}, "holdout": holdout, **fields})


def _meta(
    cand: float, naive: float, current: float | None = None, sha: str | None = "old"
) -> ModelMeta:
    return _meta_of(
        {
            "candidate": {"mae": cand},
            "naive": {"mae": naive},
            "current": None if current is None else {"mae": current},
            "current_sha256": sha if current is not None else None,
        }
    )


OLD = _meta_of(artifact_sha256="old")


@pytest.mark.parametrize(
    ("meta", "current_meta", "expired", "promote", "reason"),
    [
        # The first model is served whatever its skill (the messages carry it)...
        (_meta(9, 10), None, False, True, "first_model_beats_naive"),
        (_meta(11, 10), None, False, True, "first_model_worse_than_naive"),
        (_meta(10, 10), None, False, True, "first_model_worse_than_naive"),  # a tie is not better
        (_meta(9, 10, current=9.5), OLD, False, True, "beats_current"),
        (_meta(9.6, 10, current=9.5), OLD, False, False, "not_better_than_current"),
        # Better than the current one is enough, even when neither beats naive.
        (_meta(10.5, 10, current=11), OLD, False, True, "beats_current"),
        (_meta(9.6, 10, current=9.5), OLD, True, True, "current_expired_beats_naive"),
        (_meta(10.5, 10, current=9.5), OLD, True, False, "current_expired_not_better_than_naive"),
        # Scored against another model than the one serving: no proof, keep the old...
        (_meta(9, 10, current=9.5, sha="other"), OLD, False, False, "not_scored_against_current"),
        (_meta(9, 10), OLD, False, False, "not_scored_against_current"),
        # ...unless the serving one is expired and the candidate beats naive.
        (_meta(9, 10), OLD, True, True, "current_expired_beats_naive"),
        # ...as long as it has a valid holdout score.
        (_meta(float("nan"), 10), None, False, False, "no_valid_score"),
    ],
)
def test_promotion_rules(
    meta: ModelMeta,
    current_meta: ModelMeta | None,
    expired: bool,
    promote: bool,
    reason: str,
) -> None:
    decision = decide_promotion(meta, current_meta, expired)
    assert (decision.promote, decision.reason) == (promote, reason)
    assert should_promote(meta, current_meta, expired) is promote


def test_result_promote_uses_its_own_scores(
    cold: TrainingResult, frozen_runs: tuple[TrainingResult, TrainingResult]
) -> None:
    skill = cold.meta["skill"]
    assert cold.promote(current_expired=False) is math.isfinite(skill)
    warm, _ = frozen_runs
    ho = warm.meta["holdout"]
    # Judged by the champion's CRPS against the serving version's, and the static interval's.
    champ = ho["candidate"] if ho["champion"] == "lstm" else ho[ho["champion"]]
    beats_current = champ["crps"] < ho["current"]["crps"]
    beats_naive = champ["crps"] < ho["static"]["crps"]
    assert warm.promote(current_expired=False) is beats_current
    assert warm.promote(current_expired=True) is (beats_current or beats_naive)
    assert should_promote(warm, cold.typed_meta, False) is beats_current


def _crps_meta(
    champion: str, scores: dict[str, float], current: float | None, sha: str | None = "old"
) -> ModelMeta:
    holdout: dict[str, Any] = {
        "metric": "crps",
        "champion": champion,
        "naive": {"mae": 10.0},
        "current": None if current is None else {"crps": current, "mae": 1.0},
        "current_sha256": sha if current is not None else None,
    }
    for kind, crps in scores.items():
        holdout["candidate" if kind == "lstm" else kind] = {"crps": crps, "mae": 99.0}
    return _meta_of(holdout)


@pytest.mark.parametrize(
    ("meta", "expired", "promote", "reason"),
    [
        # The champion's CRPS is what counts, not the LSTM's MAE (99 here, worse than naive).
        (
            _crps_meta("lstm", {"lstm": 1.0, "garch": 1.1, "static": 1.3}, 1.05),
            False,
            True,
            "beats_current",
        ),
        (
            _crps_meta("lstm", {"lstm": 1.0, "garch": 1.1, "static": 1.3}, 0.95),
            False,
            False,
            "not_better_than_current",
        ),
        # A version whose champion is GARCH is judged by GARCH's CRPS.
        (
            _crps_meta("garch", {"lstm": 1.2, "garch": 1.0, "static": 1.3}, 1.05),
            False,
            True,
            "beats_current",
        ),
        # Expired: beating the static interval (the naive distribution) is enough.
        (
            _crps_meta("lstm", {"lstm": 1.2, "static": 1.3}, 1.0),
            True,
            True,
            "current_expired_beats_naive",
        ),
        (
            _crps_meta("lstm", {"lstm": 1.4, "static": 1.3}, 1.0),
            True,
            False,
            "current_expired_not_better_than_naive",
        ),
    ],
)
def test_promotion_by_champion_crps(
    meta: ModelMeta, expired: bool, promote: bool, reason: str
) -> None:
    decision = decide_promotion(meta, OLD, expired)
    assert (decision.promote, decision.reason) == (promote, reason)


def test_champion_is_the_lowest_crps_and_publishable(cold: TrainingResult) -> None:
    ho, champ = cold.meta["holdout"], cold.meta["champion"]
    crps = {
        "lstm": ho["candidate"]["crps"],
        **{k: ho[k]["crps"] for k in ("garch", "ewma", "static")},
    }
    assert all(v is not None and v > 0 for v in crps.values())
    assert champ["kind"] == ho["champion"] == min(crps, key=lambda k: crps[k])
    assert champ["crps"] == crps[champ["kind"]]
    assert 0 < champ["calibrated_level"] < 1
    if champ["kind"] != "lstm":
        from forecaster.econometric import FilterState, VarianceModel

        VarianceModel.from_dict(champ["params"])
        FilterState.from_dict(champ["state"])
        assert champ["state_time"] == cold.meta["training_range"]["last_open_time"]
    # Never worse than naive unflagged: the published point falls back to the last close.
    assert ho["candidate"]["mae"] <= ho["naive"]["mae"]
    assert (cold.meta["point"] == "naive") == (ho["candidate"]["mae"] == ho["naive"]["mae"])
