"""The Keras model: a stack of LSTMs over a window of scaled features, one scaled return out.

TensorFlow is imported lazily (inside functions) so importing this module is cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import structlog

from config.settings import ModelSettings

if TYPE_CHECKING:
    import keras

__all__ = ["build_model", "configure_tensorflow", "set_seed"]

log = structlog.get_logger(__name__)

_configured_threads: int | None = None


def configure_tensorflow(threads: int) -> None:
    """Bound TensorFlow's thread pools; call once per process before building any model.

    TensorFlow fixes its pools when its runtime starts, so a later call with another value cannot
    take effect: it is logged and ignored rather than failing a training run.
    """
    global _configured_threads  # noqa: PLW0603 - process-wide runtime state, set once
    if _configured_threads == threads:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        _configured_threads = threads
    except RuntimeError:
        log.warning(
            "tensorflow_threads_already_set",
            wanted=threads,
            intra=tf.config.threading.get_intra_op_parallelism_threads(),
            inter=tf.config.threading.get_inter_op_parallelism_threads(),
        )


def set_seed(seed: int) -> None:
    """Seed Python, numpy and the backend so weight init and shuffling are reproducible."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(seed)


def build_model(n_features: int, settings: ModelSettings) -> keras.Model:
    """The seed architecture, generalised to ``settings.layers`` LSTMs.

    ``layers=2`` (the default) is LSTM(units, return_sequences) → Dropout → LSTM(units) →
    Dense(1): dropout follows every LSTM but the last. Adam(learning_rate), MSE loss.
    Weight init is seeded from ``settings.seed``. TensorFlow's thread pools are bounded to
    ``settings.threads`` first unless the process already did (:func:`configure_tensorflow`).
    """
    if _configured_threads is None:
        configure_tensorflow(settings.threads)
    import keras

    set_seed(settings.seed)
    stack: list[Any] = [keras.Input(shape=(settings.window, n_features), name="window")]
    for i in range(settings.layers):
        last = i == settings.layers - 1
        stack.append(keras.layers.LSTM(settings.units, return_sequences=not last, name=f"lstm_{i}"))
        if not last and settings.dropout > 0:
            stack.append(keras.layers.Dropout(settings.dropout, name=f"dropout_{i}"))
    stack.append(keras.layers.Dense(1, name="out"))
    model = keras.Sequential(stack, name="cryptocast_lstm")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate), loss="mse")
    return model
