"""The seeds' recipe, kept only for the backtest to show why it misleads.

The seed notebooks trained an LSTM on *price levels*: closes scaled to [0, 1] by a MinMaxScaler
fit on the **whole** series, windows of 60 scaled closes, the next scaled close as the target.
Two things make it look better than it is:

- the scaler's min and max come from the whole series, test span included, so every input
  already "knows" the future's price range (look-ahead: the backtest marks it ``lookahead``);
- on levels, the cheapest way to a low MSE is to output (nearly) the last close, so its MAE
  sits next to the naive forecast's while telling nothing about the next move.

Same Keras architecture as the returns model (:func:`forecaster.training.model.build_model` with one
feature), same train window, early stopping and warm start per fold, so only the recipe differs.
Never used outside the backtest.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.preprocessing import MinMaxScaler

from config.settings import ModelSettings
from forecaster.data import CandleArrays
from forecaster.features import FeatureError, target_rows

if TYPE_CHECKING:
    import keras

__all__ = ["LevelScaler", "SeedFit", "fit_seed", "predict_seed"]


@dataclass(frozen=True, slots=True)
class LevelScaler:
    """The seeds' scaling of closes: scikit-learn's ``MinMaxScaler`` on one column."""

    scaler: MinMaxScaler

    @classmethod
    def fit_whole_series(cls, arrays: CandleArrays) -> LevelScaler:
        """The seeds' mistake, on purpose: min and max over every close, future ones included."""
        return cls(MinMaxScaler().fit(np.asarray(arrays.close, np.float64).reshape(-1, 1)))

    @property
    def low(self) -> float:
        return float(self.scaler.data_min_[0])

    @property
    def high(self) -> float:
        return float(self.scaler.data_max_[0])

    def transform(self, price: np.ndarray) -> np.ndarray:
        """Prices to [0, 1] (over the fitted range)."""
        col = np.asarray(price, np.float64).reshape(-1, 1)
        return np.asarray(self.scaler.transform(col)).reshape(np.shape(price))

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Scaled values back to prices."""
        col = np.asarray(z, np.float64).reshape(-1, 1)
        return np.asarray(self.scaler.inverse_transform(col)).reshape(np.shape(z))


@dataclass(slots=True)
class SeedFit:
    """One fold's level model and what its training cost."""

    model: keras.Model
    seconds: float
    epochs_run: int
    warm_started: bool


def _windows(arrays: CandleArrays, scaler: LevelScaler, rows: np.ndarray, w: int) -> np.ndarray:
    # Inputs are the w closes before each target, like the returns model's windows (no hole).
    z = scaler.transform(arrays.close)
    idx = rows[:, None] + np.arange(-w, 0)[None, :]
    return z[idx][:, :, None].astype(np.float32)


def fit_seed(
    train_arrays: CandleArrays,
    scaler: LevelScaler,
    settings: ModelSettings,
    previous: SeedFit | None = None,
) -> SeedFit:
    """Train the level model on ``train_arrays`` (chronological early-stop split at the end)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras  # noqa: PLC0415 (Keras loads only where a model is built or read)

    from forecaster.training.model import build_model, set_seed  # noqa: PLC0415 (pulls in TensorFlow; loaded only when the LSTM runs)

    t0 = time.perf_counter()
    w = settings.window
    rows = target_rows(train_arrays, w)
    n_val = round(rows.size * settings.early_stop_fraction)
    if rows.size - n_val < 2 or n_val < 1:
        raise FeatureError(f"too few candles for the seed model: {rows.size} windows")
    x = _windows(train_arrays, scaler, rows, w)
    y = scaler.transform(train_arrays.close[rows]).astype(np.float32)
    model = build_model(1, settings)
    warm = previous is not None
    if previous is not None:
        model.set_weights(previous.model.get_weights())
    set_seed(settings.seed)
    cut = rows.size - n_val
    fit = model.fit(
        x[:cut],
        y[:cut],
        validation_data=(x[cut:], y[cut:]),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        shuffle=True,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=settings.patience, restore_best_weights=True
            )
        ],
        verbose=0,
    )
    epochs = len(fit.history.get("val_loss", []))
    return SeedFit(model, time.perf_counter() - t0, epochs, warm)


def predict_seed(
    fit: SeedFit, arrays: CandleArrays, rows: np.ndarray, scaler: LevelScaler, window: int
) -> np.ndarray:
    """Predicted closes for target ``rows`` (each from the ``window`` closes before it)."""
    if rows.size == 0:
        return np.empty(0, dtype=np.float64)
    x = _windows(arrays, scaler, rows, window)
    # A direct call, not predict(): predict() retraces its tf.function for every new model.
    out: Any = fit.model(x, training=False)
    return scaler.inverse(np.asarray(out, dtype=np.float64)[:, 0])
