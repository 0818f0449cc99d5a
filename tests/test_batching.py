"""Batched inference across series equals each model's own forward pass."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from forecaster.inference import LoadedModel, NumpyLSTM
from forecaster.serving.batching import InferenceBatcher, forward_many
from tests.forecaster_support import btc_arrays, tiny_settings, trained_tiny


def nets(
    n: int, layers: int = 2, units: int = 8, seed: int = 0, n_features: int = 3, n_out: int = 1
) -> list[NumpyLSTM]:
    """Random Keras-shaped weights (kernel, recurrent, bias per layer; dense) per series."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lstm = []
        fin = n_features
        for _l in range(layers):
            lstm.append(
                (
                    rng.normal(0, 0.5, (fin, 4 * units)),
                    rng.normal(0, 0.5, (units, 4 * units)),
                    rng.normal(0, 0.1, 4 * units),
                )
            )
            fin = units
        out.append(
            NumpyLSTM(
                lstm,
                (rng.normal(0, 0.5, (units, n_out)), rng.normal(0, 0.1, n_out)),
                dtype=np.float64,
            )
        )
    return out


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_forward_many_equals_each_net_alone(layers: int) -> None:
    ns = nets(7, layers=layers, seed=layers)
    rng = np.random.default_rng(1)
    xs = [rng.normal(0, 1, (1, 20, 3)) for _ in ns]
    together = forward_many(ns, xs)
    alone = np.array([float(n(x)[0]) for n, x in zip(ns, xs, strict=True)])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-12)


async def test_batcher_gives_each_series_its_own_models_forecast() -> None:
    import keras

    from forecaster.training.model import build_model

    base = trained_tiny()  # real metadata (scaler, interval) for models of this shape
    settings = tiny_settings()
    models = [base.model]
    for seed in range(1, 4):  # same shape, different weights: one batch
        keras.utils.set_random_seed(seed)
        models.append(
            LoadedModel.from_keras(build_model(len(settings.features), settings), base.meta)
        )
    arrays = btc_arrays(600)
    n = settings.window + 1
    windows = [arrays.slice(i * 100, i * 100 + n) for i in range(4)]
    batcher = InferenceBatcher()
    got = await asyncio.gather(
        *(batcher.forecast(m, w) for m, w in zip(models, windows, strict=True))
    )
    for m, w, g in zip(models, windows, got, strict=True):
        ref = m.predict_next(w)
        assert g.pred_close == pytest.approx(ref.pred_close, rel=1e-6)
        assert g.lower == pytest.approx(ref.lower, rel=1e-6)
        assert g.sigma == pytest.approx(ref.sigma, rel=1e-5)
    assert len({g.upper for g in got}) == 4
    assert batcher.batches == 1 and batcher.batched == 4


async def test_batcher_never_serves_the_weights_of_a_replaced_model() -> None:
    """A series swaps its model for each promoted version; the old one is freed, and CPython
    reuses freed addresses, so a cache of stacked weights keyed by ``id`` alone would serve
    the new version with an old version's weights (it did: the third model got the first one's
    address and forecasts). Every forecast must be its own model's."""
    import gc
    from dataclasses import replace

    base = trained_tiny().model
    arrays = btc_arrays(300)
    window = arrays.slice(0, tiny_settings().window + 1)
    batcher = InferenceBatcher()
    seen = set()
    for seed in range(40):
        (net,) = nets(
            1,
            layers=base.net.n_layers,
            units=base.net.units,
            seed=seed,
            n_features=base.net.n_features,
            n_out=base.net.n_out,
        )
        model = replace(base, net=net)
        got = await batcher.forecast(model, window)
        # The spread depends on every weight (the point may be the last close: naive fallback).
        assert got.upper == pytest.approx(model.predict_next(window).upper, rel=1e-9)
        seen.add(round(got.upper, 6))
        del model, net
        gc.collect()
    assert len(seen) > 30


async def test_series_sharing_one_model_are_one_forward_pass() -> None:
    """A global model serves every series of a timeframe with one set of weights: the windows
    of the series closing together are one batch through it (S = 1, B = N), not N stacked
    copies, and each series gets what the model alone gives for its window."""
    model = trained_tiny().model
    arrays = btc_arrays(900)
    n = tiny_settings().window + 1
    windows = [arrays.slice(i * 20, i * 20 + n) for i in range(30)]
    levels = [None, *(0.5 + 0.01 * i for i in range(1, 30))]  # each series' calibrated level
    batcher = InferenceBatcher()
    passes: list[tuple[int, ...]] = []
    net = model.net
    real_call = type(net).__call__

    class CountingNet(type(net)):  # type: ignore[misc]
        def __call__(self, x: np.ndarray) -> np.ndarray:
            passes.append(np.shape(x))
            return real_call(self, x)

    net.__class__ = CountingNet  # the same weights, their passes counted
    try:
        got = await asyncio.gather(
            *(batcher.forecast(model, w, lv) for w, lv in zip(windows, levels, strict=True))
        )
    finally:
        net.__class__ = NumpyLSTM
    assert passes == [(30, tiny_settings().window, net.n_features)]
    assert batcher.batches == 1 and batcher.batched == 30
    for w, lv, g in zip(windows, levels, got, strict=True):
        ref = model.predict_next(w, lv)
        assert g.level == ref.level
        for field in ("pred_close", "lower", "upper", "sigma", "p_up", "loc", "scale"):
            assert getattr(g, field) == pytest.approx(getattr(ref, field), rel=1e-6, abs=1e-12)
        np.testing.assert_allclose(g.quantiles, ref.quantiles, rtol=1e-6)
    assert len({g.upper for g in got}) == 30


def test_inputs_of_many_windows_equal_each_window_alone() -> None:
    """The shared model's inputs for N series are built in one set of numpy calls: the same
    numbers, exactly, as each series' window alone."""
    model = trained_tiny().model
    arrays = btc_arrays(900)
    n = tiny_settings().window + 1
    windows = [arrays.slice(i * 17, i * 17 + n + i % 3) for i in range(25)]  # longer ones too
    x, lasts, sigmas = model.prepare_many(windows)
    for i, w in enumerate(windows):
        xi, last, sigma = model.prepare(w)
        assert np.array_equal(x[i], xi[0]) and lasts[i] == last and sigmas[i] == sigma
