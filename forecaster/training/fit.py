"""Fitting the Keras model: build, warm-start, early stopping, and a stop flag.

Shared by the per-series training (:mod:`forecaster.training.train`) and the global model's
(:mod:`forecaster.training.pooled`), so both fit exactly the same way.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from config.settings import ModelSettings
from forecaster.inference import LoadedModel
from forecaster.training.model import build_model, set_seed, stop_callback

__all__ = ["FitResult", "TrainingStopped", "fit_keras", "raise_if_stopped"]


class TrainingStopped(RuntimeError):
    """A run ended early by its ``stop`` flag (see :func:`train`): it stores no model."""


@dataclass(frozen=True, slots=True)
class FitResult:
    """A fitted Keras model and how the fit went."""

    model: Any
    history: dict[str, list[float]]
    warm: bool
    val: list[float]
    best_epoch: int
    best_val: float
    initial_val: float


def fit_keras(
    settings: ModelSettings,
    x: np.ndarray,
    y: np.ndarray,
    es_x: np.ndarray,
    es_y: np.ndarray,
    current: LoadedModel | None,
    warm_start: bool,
    *,
    stop: threading.Event | None = None,
) -> FitResult:
    """Build the model, warm-start it from ``current`` when the architectures match, and fit it
    with early stopping on ``(es_x, es_y)``; the starting weights win when no epoch beats them.
    :class:`TrainingStopped` once ``stop`` is set (checked after every batch)."""
    import keras  # noqa: PLC0415 (Keras loads only where a model is built or read)

    model = build_model(len(settings.features), settings)
    warm = bool(warm_start and current is not None and current.matches(settings))
    if warm:
        assert current is not None
        model.set_weights(current.keras_weight_list())
    initial_weights = model.get_weights()
    initial_val = float(model.evaluate(es_x, es_y, batch_size=settings.batch_size, verbose=0))
    set_seed(settings.seed)  # the shuffling order, independent of what ran before
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=settings.patience, restore_best_weights=True
    )
    fit = model.fit(
        x,
        y,
        validation_data=(es_x, es_y),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        shuffle=True,
        callbacks=[stopper] if stop is None else [stopper, stop_callback(stop)],
        verbose=0,
    )
    raise_if_stopped(stop)
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    val = history.get("val_loss", [])
    best_epoch = int(np.argmin(val)) + 1 if val else 0
    best_val = float(min(val)) if val else initial_val
    if initial_val <= best_val:
        # No epoch improved on the starting point (common when warm-starting a good model):
        # keep the starting weights rather than a worse epoch.
        model.set_weights(initial_weights)
        best_epoch, best_val = 0, initial_val
    return FitResult(model, history, warm, val, best_epoch, best_val, initial_val)


def raise_if_stopped(stop: threading.Event | None) -> None:
    """Raise :class:`TrainingStopped` once ``stop`` is set."""
    if stop is not None and stop.is_set():
        raise TrainingStopped("the training was told to stop")
