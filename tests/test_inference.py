"""Loading artifacts safely, and the numpy fast path against Keras on real windows."""

from __future__ import annotations

import copy
import io
import zipfile
from typing import Any

import numpy as np
import pytest
from scipy import stats

from forecaster.features import FeatureError
from forecaster.inference import ArtifactError, LoadedModel
from forecaster.training.train import TrainingResult, prepare_for
from tests.forecaster_support import btc_arrays, tiny_settings, trained_tiny, untrained_model

TOL = 1e-5  # on scaled outputs


@pytest.fixture(scope="module")
def result() -> TrainingResult:
    return trained_tiny()


@pytest.fixture(scope="module")
def loaded(result: TrainingResult) -> LoadedModel:
    return LoadedModel.from_artifact(result.artifact, result.meta)


def _untrained(**overrides: Any) -> tuple[LoadedModel, np.ndarray]:
    """A seeded, untrained model of the given shape wrapped with real scaler + real windows."""
    s = tiny_settings(**overrides)
    data = prepare_for(btc_arrays(3000), s)
    return untrained_model(s, data), data.holdout.x[:64]


@pytest.mark.parametrize(
    "shape",
    [
        {"units": 50, "layers": 2, "window": 60},  # the default (seed) architecture
        {"units": 8, "layers": 1, "window": 32},
        {"units": 6, "layers": 3, "window": 16, "features": ["ret", "vol"]},
        {"units": 8, "layers": 2, "window": 24, "head": "gaussian"},
        {"units": 8, "layers": 2, "window": 24, "head": "mse", "normalisation": "none"},
    ],
    ids=["default", "1-layer", "3-layer", "gaussian", "mse"],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_path_matches_keras(shape: dict[str, Any], dtype: type[np.floating[Any]]) -> None:
    model, x = _untrained(**shape)
    fast = LoadedModel.from_keras(model.model, model.meta, dtype=dtype)
    ref = fast.forward_model(x)
    got = fast.forward(x)
    k = {"mse": 1, "gaussian": 2, "student_t": 3}[fast.head]
    assert got.shape == ref.shape == ((len(x),) if k == 1 else (len(x), k))
    assert np.max(np.abs(got - ref)) < TOL
    assert np.std(ref) > 0  # the windows are not all alike
    # Batch of one, as serving calls it.
    assert np.max(np.abs(fast.forward(x[:1])[0] - ref[0])) < TOL


def test_fast_path_matches_keras_on_trained_model(loaded: LoadedModel) -> None:
    x = prepare_for(btc_arrays(3000), tiny_settings()).holdout.x
    assert np.max(np.abs(loaded.forward(x) - loaded.forward_model(x))) < TOL
    assert np.max(np.abs(loaded.forward(x[:32]) - loaded.forward_keras(x[:32]))) < TOL


def test_artifact_round_trip(result: TrainingResult, loaded: LoadedModel) -> None:
    arrays = btc_arrays(3000)
    rows = np.arange(2800, 3000)
    a, ok_a = result.model.predict_returns(arrays, rows)
    b, ok_b = loaded.predict_returns(arrays, rows)
    assert ok_a.all() and ok_b.all()
    assert np.array_equal(a, b)
    assert loaded.predict_next(arrays) == result.model.predict_next(arrays)
    assert loaded.window == 24
    assert loaded.features == ("ret", "range", "vol", "gk", "tod_sin", "tod_cos")
    assert loaded.q_low == result.meta["interval"]["q_low"]


def test_predict_next(loaded: LoadedModel) -> None:
    arrays = btc_arrays(3000)
    fc = loaded.predict_next(arrays)
    last = arrays.close[-1]
    assert fc.pred_close == pytest.approx(last * np.exp(fc.pred_return))
    assert fc.lower < fc.pred_close < fc.upper
    # The interval is the distribution's, at the holdout-calibrated level.
    assert fc.level == loaded.start_level
    z = stats.t.ppf((1 + fc.level) / 2, fc.df)
    assert fc.upper == pytest.approx(last * np.exp(fc.loc + fc.scale * z), rel=1e-9)
    assert fc.quantiles[2] == pytest.approx(fc.pred_close)  # the median is the point
    assert fc.sigma == pytest.approx(fc.scale * np.sqrt(fc.df / (fc.df - 2)))
    assert 0 < fc.p_up < 1
    # Only the last window+1 candles matter, and the batched path agrees.
    assert loaded.predict_next(arrays.tail(25)) == fc
    pred, ok = loaded.predict_returns(arrays, np.array([len(arrays) - 1]))
    t = len(arrays) - 1
    assert loaded.predict_next(arrays.slice(0, t)).pred_return == pytest.approx(pred[0], abs=1e-7)
    assert ok.all()
    slow = loaded.predict_keras(arrays)
    assert slow.pred_return == pytest.approx(fc.pred_return, abs=TOL * loaded.scaler.target_std)
    assert slow.scale == pytest.approx(fc.scale, rel=1e-4)


def test_predict_refuses_windows_across_holes(loaded: LoadedModel) -> None:
    arrays = btc_arrays(3000)
    with pytest.raises(FeatureError, match="hole"):
        loaded.predict_next(arrays.slice(0, 1990))  # the 13:00 hole is 9 candles back
    with pytest.raises(FeatureError, match="need 25"):
        loaded.predict_next(arrays.slice(0, 10))
    pred, ok = loaded.predict_returns(arrays, np.array([1990, 2005, 2006]))
    assert ok.tolist() == [False, False, True]
    assert np.isnan(pred[:2]).all() and np.isfinite(pred[2])


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0xFF
    return bytes(b)


def test_corrupted_artifact_raises_clearly(result: TrainingResult) -> None:
    art, meta = result.artifact, result.meta
    with pytest.raises(ArtifactError, match="sha256"):
        LoadedModel.from_artifact(_flip(art, len(art) // 2), meta)
    no_sha = {k: v for k, v in meta.items() if k != "artifact_sha256"}
    with pytest.raises(ArtifactError, match=r"not a \.keras"):
        LoadedModel.from_artifact(b"\x80\x04garbage pickle", no_sha)
    with pytest.raises(ArtifactError):
        LoadedModel.from_artifact(art[: len(art) // 2], no_sha)
    # A valid zip whose weights file is damaged: Keras itself must fail, and we say so.
    damaged = _damage_member(art, "model.weights.h5")
    with pytest.raises(ArtifactError, match="cannot be loaded"):
        LoadedModel.from_artifact(damaged, no_sha)


def _damage_member(artifact: bytes, name: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(artifact)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == name:
                data = data[: len(data) // 3]
            dst.writestr(info, data)
    return out.getvalue()


def test_unsafe_lambda_model_is_refused(result: TrainingResult, tmp_path: Any) -> None:
    import keras

    inp = keras.Input((24, 3))
    out = keras.layers.Dense(1)(keras.layers.Lambda(lambda t: t[:, -1, :])(inp))
    path = tmp_path / "evil.keras"
    keras.Model(inp, out).save(path)
    meta = {k: v for k, v in result.meta.items() if k != "artifact_sha256"}
    with pytest.raises(ArtifactError, match="cannot be loaded"):
        LoadedModel.from_artifact(path.read_bytes(), meta)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m.update(schema=99), "schema"),
        (lambda m: m["architecture"].update(features=["ret", "oops"]), "features"),
        (lambda m: m["architecture"].update(window=16), "input shape"),
        (lambda m: m["scaler"].update(features=["ret", "vol", "range"]), "scaler features"),
        (lambda m: m["scaler"].update(std=[1.0]), "scaler"),
        (lambda m: m["interval"].update(q_low=1.0), "interval"),
        (lambda m: m.pop("interval"), "interval"),
    ],
)
def test_mismatched_meta_is_refused(result: TrainingResult, change: Any, match: str) -> None:
    meta = copy.deepcopy(result.meta)
    change(meta)
    with pytest.raises(ArtifactError, match=match):
        LoadedModel.from_artifact(result.artifact, meta)
